#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_api.c into fuzz/corpus/ (run from anywhere).

Each seed is byte 0 (the mode: 0 single-threaded, 1 multi-threaded) and ops
of 4 bytes [op, a, b, c] as fuzz_api.c's top comment describes. The seeds
only give the fuzzer a start on each area of the API; they are small (< 1 KB)
and every one passes. Regenerate after changing the op encoding.
"""
import os

OPS = ["DESYNC", "SYNC", "TRY_SYNC", "FUT", "AFTER", "SUSPEND", "RESUME", "WAIT", "POLL",
       "THEN", "DETACH", "FREE", "FD", "READY", "PROMISE_NEW", "PROMISE_DONE", "INNER",
       "CHAN_NEW", "CHAN_RETAIN", "CHAN_CLOSE", "SEND", "READ", "STREAM_NEW", "STREAM_FREE",
       "PIPE", "REF", "TEMP", "DRAIN", "SCHED", "MISC"]
OP = {name: i for i, name in enumerate(OPS)}

# targets: shared objects 0, 1, bare queues 2, 3; the caller's objects 4, 5, queue 6
OBJ0, OBJ1, Q0, Q1, T0, T1, TQ = range(7)
# nest kinds (low 4 bits), the shared target they use in bits 4-5
(N_NONE, N_SYNC_SELF, N_TRY_SELF, N_WAIT_SELF, N_DESYNC_OTHER, N_SYNC_OTHER, N_TRY_OTHER,
 N_DRAIN, N_SCHED_FREE, N_RELEASE_SELF, N_FSYNC_FREE, N_FDESYNC_DETACH, N_THEN_SELF) = range(13)
# async modes (FUT b bits 3-5)
A_NULL, A_READY, A_PROMISE, A_CANCELLED, A_OTHERQ = range(5)


def op(name, a=0, b=0, c=0, caller=0):
    return bytes([OP[name] | (0x80 if caller else 0), a & 0xff, b & 0xff, c & 0xff])


def nest(kind, dest=0, flags=0):
    return kind | (dest << 4) | flags


def fut(slot, mode, fsync=False, viaq=False):
    return slot | (mode << 3) | (0x40 if fsync else 0) | (0x80 if viaq else 0)


SEEDS = {}

SEEDS["st_jobs"] = [0] + [
    op("TEMP", 0), op("TEMP", 2),
    op("DESYNC", OBJ0), op("DESYNC", Q0), op("DESYNC", OBJ1, 0, 1), op("DESYNC", Q1, 0, 7),
    op("DESYNC", T0, 0, 0x80), op("DESYNC", TQ, 0, 3),
    op("SYNC", OBJ0), op("SYNC", Q1), op("SYNC", T0), op("SYNC", TQ, 0, 0x80),
    op("TRY_SYNC", OBJ1), op("TRY_SYNC", Q0), op("TRY_SYNC", T1),
    op("DESYNC", T0), op("TEMP", 0), op("DESYNC", T0), op("TEMP", 0), op("DRAIN"),
]

SEEDS["st_nested"] = [0] + [
    op("TEMP", 1),
    op("DESYNC", OBJ0, nest(N_SYNC_SELF)), op("DESYNC", Q0, nest(N_TRY_SELF)),
    op("DESYNC", OBJ1, nest(N_WAIT_SELF)), op("DESYNC", OBJ0, nest(N_DESYNC_OTHER, 3)),
    op("DESYNC", OBJ0, nest(N_SYNC_OTHER, 1)), op("DESYNC", Q1, nest(N_TRY_OTHER, 2)),
    op("DESYNC", Q0, nest(N_DRAIN)), op("DESYNC", OBJ1, nest(N_SCHED_FREE)),
    op("DESYNC", T1, nest(N_RELEASE_SELF)), op("DESYNC", OBJ0, nest(N_FSYNC_FREE, 2)),
    op("DESYNC", OBJ1, nest(N_FDESYNC_DETACH, 0, 0x40)), op("DESYNC", Q0, nest(N_THEN_SELF)),
    op("SYNC", OBJ1, nest(N_SYNC_OTHER, 0)), op("SYNC", OBJ0, nest(N_WAIT_SELF, 0, 0x40)),
    op("TEMP", 1), op("DRAIN"),
]

SEEDS["st_futures"] = [0] + [
    op("FUT", OBJ0, fut(0, A_NULL)), op("FUT", Q0, fut(1, A_READY)),
    op("FUT", OBJ1, fut(2, A_CANCELLED)), op("FUT", OBJ0, fut(3, A_OTHERQ), nest(0, 3)),
    op("FUT", Q1, fut(4, A_READY, viaq=True)), op("READY", 5, 7),
    op("POLL", 0, 1), op("WAIT", 0), op("POLL", 0), op("WAIT", 1, 0x80), op("FD", 1),
    op("WAIT", 2), op("WAIT", 3), op("POLL", 4, 1), op("DRAIN"), op("POLL", 4, 1),
    op("WAIT", 5, 0x40), op("FD", 5), op("THEN", 2, 1), op("DETACH", 3), op("FREE", 4),
    op("THEN", 5),
]

SEEDS["st_promise_after"] = [0] + [
    op("PROMISE_NEW", 0, 0), op("AFTER", OBJ0, 1 | (0 << 3)), op("WAIT", 1),
    op("FUT", OBJ1, fut(2, A_PROMISE)), op("AFTER", Q0, 3 | (2 << 3)),
    op("PROMISE_DONE", 0), op("WAIT", 1), op("INNER", 0), op("DRAIN"), op("WAIT", 3),
    op("PROMISE_NEW", 1, 4), op("PROMISE_DONE", 1, 1), op("WAIT", 4), op("PROMISE_DONE", 1),
    op("PROMISE_NEW", 2, 0x80), op("AFTER", OBJ1, 5 | (5 << 3)),
]

SEEDS["st_suspend"] = [0] + [
    op("DESYNC", OBJ0), op("SUSPEND", OBJ0, 0), op("DESYNC", OBJ0), op("SYNC", OBJ0),
    op("WAIT", 0), op("FUT", OBJ0, fut(1, A_READY)), op("WAIT", 1), op("RESUME", 0),
    op("SYNC", OBJ0), op("WAIT", 1), op("SUSPEND", Q1, 2), op("FREE", 2),
    op("DESYNC", Q1), op("TEMP", 0), op("SUSPEND", T0, 3), op("TEMP", 0), op("DRAIN"),
]

SEEDS["st_future_sync"] = [0] + [
    op("FUT", OBJ0, fut(0, A_READY, fsync=True)), op("DESYNC", OBJ0), op("POLL", 0, 1),
    op("DRAIN"), op("POLL", 0, 1), op("FUT", Q0, fut(1, A_NULL, fsync=True)),
    op("WAIT", 1), op("FUT", OBJ1, fut(2, A_PROMISE, fsync=True)), op("FREE", 2),
    op("FUT", Q1, fut(3, A_NULL, fsync=True)), op("DETACH", 3),
    op("FUT", Q0, fut(4, A_READY, fsync=True)), op("AFTER", OBJ1, 5 | (4 << 3)),
    op("SYNC", OBJ1), op("WAIT", 5),
]

SEEDS["st_channel"] = [0] + [
    op("CHAN_NEW", 0, 2, 0), op("SEND", 0, 0), op("SEND", 0, 2), op("SEND", 0, 1, 1),
    op("READ", 0, 0), op("READ", 0, 1), op("READ", 0, 2, 1), op("CHAN_RETAIN", 0),
    op("SEND", 0, 0), op("READ", 0, 3, 2), op("WAIT", 2), op("WAIT", 1),
    op("CHAN_CLOSE", 0), op("CHAN_CLOSE", 0), op("READ", 0, 4), op("READ", 0, 4),
    op("CHAN_NEW", 1, 0, 1), op("READ", 1, 3, 3), op("SEND", 1, 0), op("SEND", 1, 1, 4),
    op("STREAM_FREE", 1), op("WAIT", 3), op("WAIT", 4), op("SEND", 1, 2),
]

SEEDS["st_pipe"] = [0] + [
    op("CHAN_NEW", 0, 3, 0), op("PIPE", OBJ0, 0 | (1 << 2), 1 | (2 << 2)),
    op("SEND", 0, 0), op("SEND", 0, 0), op("READ", 1, 1), op("READ", 1, 3, 0),
    op("STREAM_NEW", 2, 0, 5), op("PIPE", OBJ1, 2 | (3 << 2), 3),
    op("READ", 3, 4), op("READ", 3, 4), op("STREAM_NEW", 2, 1, 4), op("PIPE", OBJ0, 2, 0),
    op("CHAN_NEW", 1, 1, 2), op("PIPE", OBJ1, 2, 2), op("SEND", 1, 1, 1),
    op("CHAN_CLOSE", 0), op("DRAIN"), op("WAIT", 0), op("READ", 1, 4), op("READ", 3, 0),
    op("STREAM_FREE", 3), op("TEMP", 0), op("STREAM_NEW", 0, 0, 3),
    op("PIPE", T0, 0 | (1 << 2), 1), op("TEMP", 0), op("READ", 1, 1),
]

SEEDS["st_misc"] = [0] + [op("MISC", 0, b) for b in range(10)] + [
    op("REF", OBJ0, 0), op("REF", Q0, 2), op("REF", OBJ1, 2), op("REF", OBJ0, 3),
    op("REF", OBJ0, 1), op("REF", T1, 0), op("REF", T1, 1), op("SCHED", 0, 3),
    op("STREAM_NEW", 0, 2, 1), op("STREAM_NEW", 0, 3), op("READ", 2, 5),
    op("SEND", 1, 1), op("CHAN_NEW", 0, 0x80), op("FREE", 0), op("THEN", 1),
    op("PROMISE_DONE", 0), op("PROMISE_DONE", 0, 1), op("WAIT", 3, 0x80),
]

SEEDS["mt_jobs"] = [1] + [
    x for i in range(12) for x in (
        op("DESYNC", i % 4, nest(N_DESYNC_OTHER, (i + 1) % 4), i, caller=0),
        op("DESYNC", (i + 1) % 4, 0, i, caller=1),
        op("SYNC", i % 4, nest(N_SYNC_OTHER, 3) if i % 3 == 0 else 0, 0, caller=i % 2),
        op("TRY_SYNC", (i + 2) % 4, 0, 0, caller=(i + 1) % 2),
    )] + [op("DRAIN", caller=0), op("DRAIN", caller=1)]

SEEDS["mt_futures"] = [1] + [
    op("FUT", OBJ0, fut(0, A_READY), caller=0), op("FUT", OBJ0, fut(0, A_PROMISE), caller=1),
    op("SUSPEND", Q0, 1, caller=0), op("DESYNC", Q0, caller=1),
    op("FUT", OBJ1, fut(2, A_NULL, fsync=True), caller=1), op("WAIT", 0, 3, caller=0),
    op("POLL", 2, 1, caller=1), op("INNER", 0, caller=1), op("WAIT", 1, 3, caller=0),
    op("RESUME", 0, caller=0), op("SYNC", OBJ0, caller=1), op("PROMISE_NEW", 0, 3, caller=0),
    op("AFTER", OBJ1, 4 | (3 << 3), caller=0), op("PROMISE_DONE", 0, caller=0),
    op("WAIT", 4, 3, caller=0), op("THEN", 0, caller=1), op("FD", 2, caller=1),
    op("SCHED", 0, 0, 1, caller=0), op("SCHED", 0, 1, caller=1), op("SCHED", 0, 2, caller=0),
]

SEEDS["mt_streams"] = [1] + [
    op("CHAN_NEW", 0, 2, 0, caller=0), op("CHAN_NEW", 0, 0, 0, caller=1),
    op("PIPE", OBJ0, 0 | (1 << 2), 1, caller=0), op("PIPE", OBJ0, 0 | (1 << 2), 3, caller=1),
    op("SEND", 0, 0, caller=0), op("SEND", 0, 1, 1, caller=1), op("SEND", 0, 1, 2, caller=0),
    op("DESYNC", OBJ0, caller=1), op("READ", 1, 1, 3, caller=0), op("READ", 1, 3, 2, caller=1),
    op("READ", 1, 2, 1, caller=0), op("STREAM_NEW", 2, 0, 6, caller=1),
    op("PIPE", OBJ1, 2 | (3 << 2), 2 << 2, caller=1), op("READ", 3, 4, caller=1),
    op("CHAN_CLOSE", 0, caller=0), op("READ", 1, 1, 3, caller=0), op("TEMP", 1, caller=1),
    op("STREAM_NEW", 0, 1, 3, caller=1), op("PIPE", T1, 0, 2, caller=1), op("TEMP", 1, caller=1),
]


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, parts in SEEDS.items():
        data = bytes([parts[0]]) + b"".join(parts[1:])
        assert len(data) < 1024, name
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
