"""How the processes of a ladder launched on several agree, on an in-process store with one thread per process.

No process group, no launcher: :class:`adaptlab.distributed.Channel` over ``torch.distributed.HashStore`` is the
same protocol the processes speak through torchrun's store.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch.distributed import HashStore

from adaptlab import distributed
from adaptlab.distributed import Channel, DistributedSpec, RungAgreement
from adaptlab.errors import TrainingError, UserError

SPEC = DistributedSpec(check_weights=True, failure_wait_seconds=0.5, timeout_minutes=0.5)


def on_two_processes(*bodies):
    """Run body(rank, channel) for ranks 0 and 1 in threads; each one's return value or exception, by rank."""
    store, results = HashStore(), [None, None]

    def run(r):
        try:
            results[r] = ("ok", bodies[r](r, Channel(store, r, 2)))
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            results[r] = ("raised", exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a process is still waiting: deadlock"
    return results


def weights(value: float):
    return lambda: {"w": torch.full((2, 2), value)}


def fit(value: float, recorded: list | None = None):
    def body(r, chan):
        RungAgreement("full", True, chan, SPEC).fitted(weights(value), lambda **kw: recorded.append(kw))
    return body


def test_both_fitted_the_same_weights_and_the_main_process_records_them():
    recorded: list = []
    results = on_two_processes(fit(1.0, recorded), fit(1.0, recorded))
    assert [kind for kind, _ in results] == ["ok", "ok"]
    digest = distributed.state_digest(weights(1.0)())
    assert recorded == [{"distributed": {"processes": 2, "strategy": "ddp", "weights_sha256": [digest, digest]}}]


def test_the_record_names_fsdp_when_the_launcher_asked_for_it(monkeypatch):
    """``accelerate launch`` with an FSDP config makes the fits FSDP, whatever the ladder says (ddp by default)."""
    recorded: list = []
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    on_two_processes(fit(1.0, recorded), fit(1.0, recorded))
    assert recorded[0]["distributed"]["strategy"] == "fsdp"
    assert distributed.strategy_used(SPEC.model_copy(update={"strategy": "deepspeed"})) == "deepspeed"


def test_one_process_failed_then_every_process_knows_the_rung_failed():
    def fails(r, chan):
        RungAgreement("full", True, chan, SPEC).failed(RuntimeError("out of memory"))

    results = on_two_processes(fit(1.0, []), fails)
    kind, exc = results[0]
    assert kind == "raised" and isinstance(exc, TrainingError)
    assert str(exc) == "process 1 of 2 failed: RuntimeError: out of memory"
    assert results[1] == ("ok", None)  # the failing process records its own error


def test_weights_that_differ_between_processes_fail_the_rung():
    results = on_two_processes(fit(1.0, []), fit(2.0, []))
    for kind, exc in results:
        assert kind == "raised" and "weights differ between processes" in str(exc)


def test_a_process_failing_alone_while_the_others_train_stops_the_run(monkeypatch):
    stopped: list[str] = []

    def stop(why):
        stopped.append(why)
        raise SystemExit(1)

    monkeypatch.setattr(distributed, "stop_run", stop)

    def stuck(r, chan):  # still inside a collective operation of training: never reports
        return None

    def fails(r, chan):
        RungAgreement("full", True, chan, SPEC).failed(RuntimeError("boom"))

    results = on_two_processes(stuck, fails)
    assert results[1][0] == "raised" and isinstance(results[1][1], SystemExit)
    assert stopped == ["process 1: rung 'full' failed here (RuntimeError: boom), but the other processes did not "
                       "report within 0 s (they are still training, waiting for this one, or stopped)"]


def test_a_follower_fits_what_the_main_process_announces_and_stops_with_it(monkeypatch):
    store = HashStore()
    main = Channel(store, 0, 2)
    main.share("command", {"op": "fit", "rung": {"method": "full"}})
    main.share("command", {"op": "fit", "rung": {"method": "lora"}})
    main.share("command", {"op": "stop", "error": "out of disk"})
    monkeypatch.setattr(distributed, "_CHANNEL", Channel(store, 1, 2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    fitted: list[str] = []
    with pytest.raises(UserError, match=r"process 1: the main process stopped \(out of disk\)"):
        distributed.follow(SPEC, lambda command: fitted.append(command["rung"]["method"]))
    assert fitted == ["full", "lora"]
