"""The intake's credit check reads each participant's escrow once per block (controller.service).

:func:`controller.service.free_escrow` caches the contract's available escrow per participant
under the block number it was read at (an escrow read is an ``eth_call``, ~30 ms on py-evm;
the block number is much cheaper). Real demo runtime on the embedded chain: a second read in
the same block does not call the chain, and a withdrawal request (a new block) is seen at
once. One test injects a fault (a block number that never changes) and shows the check
catches the stale value.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.chain import derive_account
from controller.config import ChainConfig
from controller.demo import DEMO_TRIAL, demo_site
from controller.service import free_escrow
from controller.wiring import Runtime, build_runtime
from market.domain import ParticipantId

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BOB = ParticipantId("bob")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    site = dataclasses.replace(
        demo_site(),
        database=f"sqlite:///{(tmp_path / 'escrow.sqlite').as_posix()}",
        chain=ChainConfig(),
    )
    rt = build_runtime(site, trial=DEMO_TRIAL, devices=False)
    try:
        yield rt
    finally:
        rt.close()


def reads_and_withdrawal(rt: Runtime) -> tuple[int, int, int, int]:
    """(chain reads for two checks in one block, free before, free after a withdrawal
    request, the contract's available escrow after it)."""
    assert rt.settler is not None
    settler = rt.settler
    calls: list[str] = []
    real = settler.escrow

    def counted(participant: str) -> int | None:
        calls.append(participant)
        return real(participant)

    settler.escrow = counted  # type: ignore[method-assign]
    free = free_escrow(rt, threading.RLock())
    before = free(BOB)
    assert free(BOB) == before
    same_block_reads = len(calls)
    rt.client.request_withdrawal(derive_account("bob"), 30_000_000)  # mined: a new block
    after = free(BOB)
    return (
        same_block_reads,
        before or 0,
        after or 0,
        int(rt.client.available_credit(str(derive_account("bob").address))),
    )


def test_escrow_is_read_once_per_block_and_a_new_block_is_seen(runtime: Runtime) -> None:
    reads, before, after, on_chain = reads_and_withdrawal(runtime)
    assert reads == 1  # the second check in the same block used the cached value
    assert before == 100_000_000  # the demo's deposit, nothing pending, no debts
    assert after == on_chain == before - 30_000_000


def test_the_check_catches_a_cache_that_ignores_new_blocks(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Injected fault: the block number never changes, so the cache is never refreshed."""
    frozen = runtime.client.block_number()
    monkeypatch.setattr(runtime.client, "block_number", lambda: frozen)
    reads, before, after, on_chain = reads_and_withdrawal(runtime)
    assert reads == 1
    assert after == before != on_chain  # stale: the first test's last assertion fails
