"""bench/queue Celery peer: the app, its no-op task, and the enqueuer.

Configured from the environment (set by bench/queue/run):
  BENCH_BROKER    the Redis URL (broker only; no result backend)
  BENCH_PREFIX    kombu's global_keyprefix, so every key the bench makes is its own
  BENCH_PREFETCH  worker_prefetch_multiplier (default 16)

Acknowledgement after completion: task_acks_late=True (kombu keeps each delivered
message in its `unacked` hash until the task returned).

Enqueue: `python bench_celery.py enqueue N` publishes N `noop` messages with
apply_async in a loop on one producer (Celery has no bulk publish: a group's
apply_async also sends one message per task), and prints {"enqueued":N,"seconds":S}.
"""
import json
import os
import sys
import time

from celery import Celery

app = Celery("bench", broker=os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(
    broker_transport_options={"global_keyprefix": os.environ.get("BENCH_PREFIX", "scb-")},
    broker_connection_retry_on_startup=True,
    task_acks_late=True,
    task_ignore_result=True,
    task_default_queue="bench",
    worker_prefetch_multiplier=int(os.environ.get("BENCH_PREFETCH", "16")),
    worker_send_task_events=False,
    worker_enable_remote_control=False,  # no pidbox fan-out queue per worker
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop", ignore_result=True)
def noop():
    return None


def enqueue(n):
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            noop.apply_async(producer=producer)
    secs = time.perf_counter() - start
    print(json.dumps({"enqueued": n, "seconds": secs}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "enqueue":
        sys.exit("usage: bench_celery.py enqueue N")
    enqueue(int(sys.argv[2]))
