/*
 * Test registry: one TEST_ENTRY(name, timeout_seconds) per test, where the
 * test is defined as TEST(name) in some tests/test_*.c. Included twice by
 * runner.c (X-macro). Timeouts are multiplied by $DESYNC_TEST_TIMEOUT_SCALE.
 * Keep it a plain list; append your tests under the right comment.
 */

/* core */
TEST_ENTRY(core_sync_retrieve, 10)
TEST_ENTRY(core_sync_into_local, 10)
TEST_ENTRY(core_async_update_then_sync, 10)
TEST_ENTRY(core_desync_42_43_repeat, 30)
TEST_ENTRY(core_release_with_slow_jobs_queued, 10)
TEST_ENTRY(core_retain_release, 10)
TEST_ENTRY(core_sync_drains_no_threads, 10)
TEST_ENTRY(core_try_sync, 20)
TEST_ENTRY(core_desync_returns_at_once, 20)
TEST_ENTRY(core_desync_self_from_sync, 10)
TEST_ENTRY(core_order_many_jobs, 20)
TEST_ENTRY(core_scheduler_basics, 10)
TEST_ENTRY(core_despawn_extra_threads, 10)
TEST_ENTRY(core_despawn_from_job, 10)
TEST_ENTRY(core_set_max_threads_raise, 10)
TEST_ENTRY(core_sync_idle_runs_on_caller, 10)
TEST_ENTRY(core_reentrant_edeadlk, 10)
TEST_ENTRY(core_reentrant_chain_edeadlk, 10)
TEST_ENTRY(core_reentrant_chain_cross_thread, 20)
TEST_ENTRY(core_desync_copy, 10)
TEST_ENTRY(core_bad_input, 10)
TEST_ENTRY(core_strerror, 5)
TEST_ENTRY(core_release_from_own_job, 20)
TEST_ENTRY(core_release_inside_sync_job, 10)
TEST_ENTRY(core_queue_api, 20)
TEST_ENTRY(core_get_queue, 10)
TEST_ENTRY(core_memory_visibility, 20)
TEST_ENTRY(core_fairness, 20)
TEST_ENTRY(core_idle_threads_sleep, 20)
TEST_ENTRY(core_scheduler_free_waits, 20)
TEST_ENTRY(core_objects_outlive_scheduler, 10)
TEST_ENTRY(core_exit_with_idle_threads, 30)
TEST_ENTRY(core_stress_mixed, 60)
TEST_ENTRY(core_stress_concurrent_sync, 60)
TEST_ENTRY(core_stress_create_release, 60)
TEST_ENTRY(core_stress_thread_churn, 60)

/* futures */

/* streams */
