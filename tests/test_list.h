/*
 * Test registry: one TEST_ENTRY(name, timeout_seconds) per test, where the
 * test is defined as TEST(name) in some tests/test_*.c. Included twice by
 * runner.c (X-macro). Timeouts are multiplied by $DESYNC_TEST_TIMEOUT_SCALE.
 * Keep it a plain list, one group per test file; append your tests to the
 * group of the file that defines them (tests run in this order).
 */

/* objects: data access, lifetime, releases (test_object.c) */
TEST_ENTRY(core_sync_retrieve, 10)
TEST_ENTRY(core_sync_into_local, 10)
TEST_ENTRY(core_async_update_then_sync, 10)
TEST_ENTRY(core_desync_42_43_repeat, 30)
TEST_ENTRY(core_release_with_slow_jobs_queued, 10)
TEST_ENTRY(core_retain_release, 10)
TEST_ENTRY(core_release_from_own_job, 20)
TEST_ENTRY(core_release_inside_sync_job, 10)
TEST_ENTRY(core_release_not_last_does_not_block, 20)
TEST_ENTRY(core_release_runs_backlog_no_threads, 10)
TEST_ENTRY(core_new_copy_owns_its_copy, 10)
TEST_ENTRY(core_new_copy_null_init_zeroes, 10)
TEST_ENTRY(core_new_copy_release_from_own_job, 10)

/* sync, try_sync, desync: where and when jobs run, order (test_sync.c) */
TEST_ENTRY(core_sync_drains_no_threads, 10)
TEST_ENTRY(core_sync_idle_runs_on_caller, 10)
TEST_ENTRY(core_try_sync, 20)
TEST_ENTRY(core_desync_returns_at_once, 20)
TEST_ENTRY(core_desync_self_from_sync, 10)
TEST_ENTRY(core_order_many_jobs, 20)
TEST_ENTRY(core_memory_visibility, 20)

/* queues and copied job arguments (test_queue.c) */
TEST_ENTRY(core_desync_copy, 10)
TEST_ENTRY(core_desync_copy_sizes, 20)
TEST_ENTRY(core_desync_copy_across_segments, 20)
TEST_ENTRY(core_objects_memory_recycled, 60)
TEST_ENTRY(core_job_segments_recycled, 60)
TEST_ENTRY(core_queue_api, 20)
TEST_ENTRY(core_get_queue, 10)

/* EDEADLK on reentrant syncs (test_deadlock.c) */
TEST_ENTRY(core_reentrant_edeadlk, 10)
TEST_ENTRY(core_reentrant_chain_edeadlk, 10)
TEST_ENTRY(core_reentrant_chain_cross_thread, 20)

/* schedulers and threads (test_scheduler.c) */
TEST_ENTRY(core_scheduler_basics, 10)
TEST_ENTRY(core_despawn_extra_threads, 10)
TEST_ENTRY(core_despawn_from_job, 10)
TEST_ENTRY(core_set_max_threads_raise, 10)
TEST_ENTRY(core_fairness, 20)
TEST_ENTRY(core_idle_threads_sleep, 20)
TEST_ENTRY(core_default_threads_exit_when_idle, 40)
TEST_ENTRY(core_backlog_wakes_second_worker, 60)
TEST_ENTRY(core_awake_cap_burst, 30)
TEST_ENTRY(core_queue_made_ready_by_a_blocked_job_runs, 30)
TEST_ENTRY(core_scheduler_free_waits, 20)
TEST_ENTRY(core_objects_outlive_scheduler, 10)
TEST_ENTRY(core_scheduler_free_from_own_job, 10)
TEST_ENTRY(core_exit_with_idle_threads, 30)
TEST_ENTRY(core_despawn_concurrent_keeps_a_thread, 20)
TEST_ENTRY(core_every_thread_gets_a_blocking_job, 120)
TEST_ENTRY(core_next_slot_taken_over_from_a_blocked_job, 30)
TEST_ENTRY(core_next_slot_taken_over_by_a_thread_going_idle, 30)
TEST_ENTRY(core_next_slot_taken_over_by_a_new_thread, 30)
TEST_ENTRY(core_grace_ends_when_the_waiter_stops, 60)
TEST_ENTRY(core_crowded_spinner_leaves_the_queue_to_the_watcher, 60)

/* bad input and error strings (test_errors.c) */
TEST_ENTRY(core_bad_input, 10)
TEST_ENTRY(core_strerror, 5)

/* syncs on a busy queue (test_sync_contended.c) */
TEST_ENTRY(sync_contended_runs_after_earlier_jobs, 60)
TEST_ENTRY(sync_contended_gets_its_turn, 60)
TEST_ENTRY(sync_contended_more_syncers_than_barger_slots, 60)
TEST_ENTRY(sync_contended_behind_queued_syncs_waits_outside, 60)
TEST_ENTRY(sync_contended_runs_token_no_thread_takes, 30)

/* core stress (test_core_stress.c) */
TEST_ENTRY(core_stress_mixed, 60)
TEST_ENTRY(core_stress_concurrent_sync, 60)
TEST_ENTRY(core_stress_counts_exact, 60)
TEST_ENTRY(core_stress_create_release, 60)
TEST_ENTRY(core_stress_thread_churn, 60)

/* future_desync and after (test_future_async.c) */
TEST_ENTRY(future_update_data_with_future, 10)
TEST_ENTRY(future_update_data_with_future_1000, 30)
TEST_ENTRY(future_wait_for_future, 10)
TEST_ENTRY(future_and_sync, 10)
TEST_ENTRY(future_double_future_and_sync, 20)
TEST_ENTRY(future_wait_zero_threads, 10)
TEST_ENTRY(future_wait_runs_queue_up_to_its_node, 10)
TEST_ENTRY(future_no_thread_blocked, 20)
TEST_ENTRY(future_order_desync_after_future_desync, 10)
TEST_ENTRY(future_wait_own_queue_edeadlk, 20)

/* future_sync (test_future_sync.c) */
TEST_ENTRY(future_update_data_with_future_sync, 10)
TEST_ENTRY(future_update_data_with_future_sync_1000, 30)
TEST_ENTRY(future_after_takes_over_future_sync, 30)
TEST_ENTRY(future_sync_freed_before_start, 10)
TEST_ENTRY(future_sync_runs_on_waiting_thread, 10)
TEST_ENTRY(future_sync_polled, 10)
TEST_ENTRY(future_detach, 10)
TEST_ENTRY(future_after_owns_future_sync, 10)
TEST_ENTRY(future_async_returns_future_sync, 10)
TEST_ENTRY(future_after_owns_future_sync_same_object, 10)

/* promises; reading a future (test_promise.c) */
TEST_ENTRY(future_poll_waker, 10)
TEST_ENTRY(future_wait_for_timeout, 10)
TEST_ENTRY(future_fd, 10)
TEST_ENTRY(future_then, 10)
TEST_ENTRY(future_promise_cancel, 10)
TEST_ENTRY(future_bad_input, 10)

/* suspend and resume (test_suspend.c) */
TEST_ENTRY(future_suspend_queue_1000, 30)
TEST_ENTRY(future_suspend_local_drain, 10)
TEST_ENTRY(future_release_suspended_queue, 10)
TEST_ENTRY(future_release_suspended_object, 10)

/* futures stress (test_future_stress.c) */
TEST_ENTRY(future_stress_promises, 60)
TEST_ENTRY(future_stress_objects, 60)

/* futures: completion races (test_future_race.c) */
TEST_ENTRY(future_stress_wait_timeout_race, 60)
TEST_ENTRY(future_stress_replaced_waker_race, 60)
TEST_ENTRY(future_stress_sync_drop_race, 60)

/* future combinators: all, any (test_future_comb.c) */
TEST_ENTRY(future_all_basic, 10)
TEST_ENTRY(future_all_first_error_in_array_order, 10)
TEST_ENTRY(future_any_basic, 10)
TEST_ENTRY(future_any_complete_at_creation_lowest_index, 10)
TEST_ENTRY(future_comb_bad_input, 10)
TEST_ENTRY(future_comb_free_early, 10)
TEST_ENTRY(future_comb_timeout_then_complete, 20)
TEST_ENTRY(future_comb_then_and_nested, 10)
TEST_ENTRY(future_comb_sync_inputs_run_by_waiter, 20)
TEST_ENTRY(future_comb_inputs_no_threads, 10)
TEST_ENTRY(future_any_no_threads_ready_later, 20)
TEST_ENTRY(future_comb_poll_drives_sync_input, 20)
TEST_ENTRY(future_all_edeadlk_in_own_queue, 10)
TEST_ENTRY(future_any_edeadlk_in_own_queue, 10)
TEST_ENTRY(future_comb_race_stress, 60)
TEST_ENTRY(future_comb_sync_inputs_many_waiters, 60)

/* pipe completion: pipe_in_future, pipe_in_async_future (test_pipe_completion.c);
 * allocation failures in both and in the combinators (test_fault_sweep_comb.c) */
TEST_ENTRY(pipe_in_future_wait_then_release, 30)
TEST_ENTRY(pipe_in_future_release_after_close_counts, 30)
TEST_ENTRY(pipe_in_future_release_in_job_cancels, 30)
TEST_ENTRY(pipe_in_async_future_release_in_job_cancels, 30)
TEST_ENTRY(pipe_in_async_future_all_processed, 30)
TEST_ENTRY(pipe_in_future_open_channel, 20)
TEST_ENTRY(pipe_in_future_end_states, 10)
TEST_ENTRY(pipe_in_future_bad_input, 10)
TEST_ENTRY(pipe_in_future_release_race_stress, 60)
TEST_ENTRY(fault_sweep_future_comb, 120)
TEST_ENTRY(fault_sweep_pipe_in_future, 120)

/* scheduler drain in the wait-for graph (test_deadlock_drain.c) */
TEST_ENTRY(deadlock_drain_cycle_refused, 60)
TEST_ENTRY(deadlock_drain_cycle_with_bystander, 60)
TEST_ENTRY(deadlock_drain_no_cycle, 20)

/* streams and channels (test_stream.c) */
TEST_ENTRY(stream_array_reads, 10)
TEST_ENTRY(stream_array_item_free, 10)
TEST_ENTRY(stream_bad_input, 10)
TEST_ENTRY(stream_user_reads_and_frees, 10)
TEST_ENTRY(stream_user_blocking_next_woken, 10)
TEST_ENTRY(stream_next_future_channel, 10)
TEST_ENTRY(stream_next_future_user_stream, 10)
TEST_ENTRY(channel_try_send_capacity, 10)
TEST_ENTRY(channel_odd_capacity_wraps_in_order, 20)
TEST_ENTRY(ring_emptied_restarts_at_first_slot, 10)
TEST_ENTRY(ring_order_across_wraps_and_growth, 10)
TEST_ENTRY(channel_large_capacity_grows, 10)
TEST_ENTRY(channel_waker_once_and_replaced, 10)
TEST_ENTRY(channel_epipe_after_reader_freed, 10)
TEST_ENTRY(channel_blocked_sender_gets_epipe, 10)
TEST_ENTRY(channel_blocking_send_in_order, 30)
TEST_ENTRY(channel_rendezvous, 10)
TEST_ENTRY(channel_send_future, 10)
TEST_ENTRY(channel_waiting_sends_let_in_at_half, 10)
TEST_ENTRY(channel_close_delivers_queued_items, 10)
TEST_ENTRY(channel_multiple_senders, 30)
TEST_ENTRY(channel_free_orders, 10)
TEST_ENTRY(channel_sleeping_reader_woken, 10)
TEST_ENTRY(channel_next_future_woken_by_close, 10)

/* pipes: basics (test_pipe_basic.c) */
TEST_ENTRY(pipe_in_simple_stream, 10)
TEST_ENTRY(pipe_in_channel, 10)
TEST_ENTRY(pipe_through, 10)
TEST_ENTRY(pipe_through_1000_times, 60)
TEST_ENTRY(pipe_through_input_closes, 10)
TEST_ENTRY(pipe_chain, 60)
TEST_ENTRY(pipe_output_next_future, 10)
TEST_ENTRY(pipe_bad_input, 10)

/* pipes: backpressure (test_pipe_backpressure.c) */
TEST_ENTRY(pipe_backpressure, 10)
TEST_ENTRY(pipe_backpressure_depth_change, 10)
TEST_ENTRY(pipe_backpressure_bounds_ready_input, 30)
TEST_ENTRY(pipe_backpressure_default_depth_grows, 60)
TEST_ENTRY(pipe_backpressure_slow_items_keep_depth, 30)
TEST_ENTRY(pipe_refill_at_half_keeps_depth, 60)
TEST_ENTRY(pipe_blockage, 120)

/* pipes: order with other jobs, async forms, threads (test_pipe_order.c) */
TEST_ENTRY(pipe_in_ordered_with_jobs, 20)
TEST_ENTRY(pipe_ordered_with_jobs_user_stream, 20)
TEST_ENTRY(pipe_async_holds_queue, 20)
TEST_ENTRY(pipe_in_async, 20)
TEST_ENTRY(pipe_idle_pipes_one_thread, 30)

/* pipes: references and freeing (test_pipe_lifetime.c) */
TEST_ENTRY(pipe_in_weak_reference, 10)
TEST_ENTRY(pipe_in_weak_reference_idle, 10)
TEST_ENTRY(pipe_keeps_object_alive, 10)
TEST_ENTRY(pipe_output_freed_early, 10)
TEST_ENTRY(pipe_free_orders, 30)
TEST_ENTRY(pipe_in_release_with_items_buffered, 20)

/* streams stress (test_stream_stress.c) */
TEST_ENTRY(stream_stress_chain, 120)
TEST_ENTRY(stream_stress_fan_in, 60)
TEST_ENTRY(stream_stress_free_while_flowing, 120)
TEST_ENTRY(stream_stress_pipe_in_release_race, 60)
TEST_ENTRY(stream_stress_next_future, 60)
TEST_ENTRY(stream_stress_waker_vs_free, 60)
TEST_ENTRY(stream_stress_pipe_waker_vs_free, 60)
TEST_ENTRY(stream_stress_pipe_refill_kicks, 120)

/* shutdown, drain, queues without threads (test_shutdown.c) */
TEST_ENTRY(shutdown_at_exit_loses_nothing, 30)
TEST_ENTRY(shutdown_drain_waits_for_jobs_queued_by_jobs, 30)
TEST_ENTRY(shutdown_drain_with_no_threads, 20)
TEST_ENTRY(shutdown_drain_from_own_job_edeadlk, 30)
TEST_ENTRY(shutdown_library_usable_afterwards, 30)
TEST_ENTRY(shutdown_from_job_does_not_hang, 30)
TEST_ENTRY(shutdown_queue_outlives_freed_scheduler, 10)
TEST_ENTRY(shutdown_queue_on_zero_threads_runs_at_drain, 10)
TEST_ENTRY(shutdown_pipe_on_zero_threads_produces_output, 30)
TEST_ENTRY(shutdown_scheduler_free_from_sync_job_ignored, 20)
TEST_ENTRY(shutdown_drain_runs_pipe_object_destroy, 20)

/* deadlock cycles across threads (test_deadlock_cycles.c) */
TEST_ENTRY(deadlock_cycle_two_threads_sync, 30)
TEST_ENTRY(deadlock_cycle_three_threads_sync, 30)
TEST_ENTRY(deadlock_cycle_long_sync, 30)
TEST_ENTRY(deadlock_cycle_futures, 30)
TEST_ENTRY(deadlock_cycle_futures_on_workers, 30)
TEST_ENTRY(deadlock_no_false_positive_stress, 30)
/* misused handles; concurrent calls on one handle (test_misuse.c) */
TEST_ENTRY(misuse_channel_extra_close_ignored, 10)
TEST_ENTRY(misuse_channel_send_after_close_epipe, 10)
TEST_ENTRY(misuse_promise_complete_twice_einval, 10)
TEST_ENTRY(misuse_promise_complete_race_one_wins, 30)
TEST_ENTRY(misuse_future_free_twice_ignored, 10)
TEST_ENTRY(misuse_future_double_free_reported, 30)
TEST_ENTRY(misuse_future_stale_handle_reported, 30)
TEST_ENTRY(misuse_promise_complete_after_gone_reported, 30)
TEST_ENTRY(misuse_channel_close_after_gone_reported, 30)
TEST_ENTRY(misuse_stream_double_free_reported, 30)
TEST_ENTRY(misuse_desync_after_release_reported, 30)
TEST_ENTRY(misuse_release_twice_reported, 30)
TEST_ENTRY(future_wait_concurrent_same_handle, 30)
TEST_ENTRY(channel_send_concurrent_same_handle, 30)
/* the reference crate's race scenarios, 1,000 rounds each (test_race_repeat.c) */
TEST_ENTRY(race_pipe_through_1000, 60)
TEST_ENTRY(race_pipe_in_ordering_1000, 60)
TEST_ENTRY(race_suspend_queue_1000, 60)
TEST_ENTRY(race_suspend_background_resume_1000, 60)
TEST_ENTRY(race_resume_at_once_1000, 60)
TEST_ENTRY(race_update_data_with_future_1000, 60)
TEST_ENTRY(race_after_updates_data_1000, 60)
TEST_ENTRY(race_future_sync_and_desync_across_queues_1000, 60)

/* faults: failed thread creation and allocation (test_faults.c) */
TEST_ENTRY(fault_default_scheduler_retry, 10)
TEST_ENTRY(fault_thread_fail_once_object_runs, 10)
TEST_ENTRY(fault_thread_fail_once_two_objects, 10)
TEST_ENTRY(fault_thread_fail_always, 10)
TEST_ENTRY(fault_thread_fail_every_other, 20)
TEST_ENTRY(fault_oom_scheduler_free, 10)
TEST_ENTRY(fault_oom_despawn, 10)
TEST_ENTRY(fault_oom_release_from_own_job, 10)
TEST_ENTRY(fault_oom_next_future_user_stream_wake, 10)
TEST_ENTRY(fault_oom_pipe_end, 10)
TEST_ENTRY(fault_oom_pipe_sweep, 60)
TEST_ENTRY(fault_oom_pipe_async_sweep, 60)
TEST_ENTRY(fault_oom_submit_never_runs_inline, 20)
TEST_ENTRY(fault_oom_desync_refused, 10)

/* faults: every allocation site failed in turn (test_fault_sweep.c,
 * test_fault_sweep_streams.c); a sample here, every site in
 * `make check-faults` */
TEST_ENTRY(fault_sweep_objects, 120)
TEST_ENTRY(fault_sweep_queues, 120)
TEST_ENTRY(fault_sweep_futures, 120)
TEST_ENTRY(fault_sweep_channels, 120)
TEST_ENTRY(fault_sweep_streams, 120)
TEST_ENTRY(fault_sweep_pipes, 120)
TEST_ENTRY(fault_sweep_schedulers, 120)
TEST_ENTRY(fault_sweep_threads, 120)
TEST_ENTRY(fault_found_sync_job_releases_busy_object, 30)

/* fork() while the library is in use (test_fork.c) */
TEST_ENTRY(fork_child_runs_background_jobs, 60)
TEST_ENTRY(fork_object_busy_at_fork_is_forked_off, 60)
TEST_ENTRY(fork_from_job, 60)
TEST_ENTRY(fork_under_load, 120)
TEST_ENTRY(fork_while_threads_block_in_sync, 60)

/* bounded queues: limits, try_desync (test_bounded.c) */
TEST_ENTRY(bounded_desync_blocks_until_room, 20)
TEST_ENTRY(bounded_try_desync_eagain, 20)
TEST_ENTRY(bounded_eagain_from_own_job_and_pool, 20)
TEST_ENTRY(bounded_zero_threads_producer_runs_queue, 20)
TEST_ENTRY(bounded_other_calls_never_refused, 20)
TEST_ENTRY(bounded_suspended_queue, 30)
TEST_ENTRY(bounded_deadlock_cycle_edeadlk, 30)
TEST_ENTRY(bounded_stress_order_exactly_once, 60)

/* introspection: queue and scheduler stats, dump, labels, thread names
 * (test_stats.c) */
TEST_ENTRY(stats_queue_counts_and_states, 20)
TEST_ENTRY(stats_queue_held_by_future, 20)
TEST_ENTRY(stats_scheduler_counters, 30)
TEST_ENTRY(stats_dump_shows_labels, 20)
TEST_ENTRY(stats_cold_part_keeps_scheduler, 20)
TEST_ENTRY(stats_worker_threads_named, 20)

/* jobs over several objects: sync_all, desync_all (test_multi.c) */
TEST_ENTRY(multi_sync_all_datas, 10)
TEST_ENTRY(multi_two_objects, 10)
TEST_ENTRY(multi_many_objects, 10)
TEST_ENTRY(multi_errors, 10)
TEST_ENTRY(multi_job_releases_object, 10)
TEST_ENTRY(multi_order, 10)
TEST_ENTRY(multi_sync_all_no_threads, 10)
TEST_ENTRY(multi_no_threads_sync_one_object, 10)
TEST_ENTRY(multi_no_threads_part_waits_for_later_token, 20)
TEST_ENTRY(multi_stress_random_sets, 60)
TEST_ENTRY(multi_stress_one_thread_scheduler, 60)
TEST_ENTRY(multi_cycle_sync_all_and_sync, 30)
TEST_ENTRY(multi_cycle_two_sync_alls, 30)

/* version (test_version.c) */
TEST_ENTRY(version_matches_headers, 5)

/* timers and delay futures (test_timer.c) */
TEST_ENTRY(timer_bad_input, 10)
TEST_ENTRY(timer_one_shot_fires_once, 30)
TEST_ENTRY(timer_periodic_cancel_stops, 30)
TEST_ENTRY(timer_queue_periodic, 30)
TEST_ENTRY(timer_coalesces_missed_periods, 30)
TEST_ENTRY(timer_equal_delays_fire_in_start_order, 30)
TEST_ENTRY(timer_many_fire_in_deadline_order, 30)
TEST_ENTRY(timer_cancel_before_fire, 30)
TEST_ENTRY(timer_cancel_from_own_job, 30)
TEST_ENTRY(timer_keeps_object_alive, 30)
TEST_ENTRY(timer_future_delay, 30)
TEST_ENTRY(timer_future_delay_with_after, 30)
TEST_ENTRY(timer_zero_threads_driven_by_drain_and_sync, 30)
TEST_ENTRY(timer_scheduler_free_with_pending_timer, 30)
TEST_ENTRY(timer_survives_despawn, 60)
TEST_ENTRY(timer_cancel_races_fire, 60)
TEST_ENTRY(timer_fork_while_firing, 120)
TEST_ENTRY(timer_stress_start_cancel, 60)
