"""Calibration: what one step of each kind costs on this device, measured at the job's start.

The plan (`sec_engine.planning`) is sized from these numbers, so they must describe the
device, not the moment: on a CPU each measurement is the process's CPU time over the timed
work divided by the threads it runs on. A second process keeping the cores busy stretches the
wall clock of a step, not the CPU time it burns, so a busy worker plans the same steps as a
quiet one and just takes longer to run them. That holds only while torch's OpenMP threads
sleep when they wait (OMP_WAIT_POLICY=PASSIVE, which importing sec_engine sets): spinning
threads burn CPU time while their partner is descheduled, and a teacher step measured 1.47 s
of CPU under load with spinning against 0.40 s passive (0.38-0.43 s on a quieter machine).
On CUDA the wall clock (after a synchronize) is the device's time.

Everything runs on throwaway copies (the teacher's weights, the optimizer and the RNGs a job
trains with are untouched), on real training batches, each timed after an untimed run of the
same shape.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sec_engine.data.encoding import Batch, Features, collate, length_grouped_batches
from sec_engine.planning import Throughput
from sec_engine.training import forward

TIMED_STEPS = 4
INFER_ROWS = 128
REPEATS = 3  # timed runs per batch; the cheapest counts (see _time)
# A batch whose untimed first run took longer than this (device clock) is timed once: over
# seconds, interference averages out instead of landing on one run, and repeating a base-size
# model's steps made its calibration 221 s of a dry run (all-mpnet-base-v2, 2 CPU cores, where
# a step costs about 3 s). MiniLM-sized steps (0.4-0.9 s) keep all three repeats.
SLOW_RUN_S = 2.0


def device_clock(device: torch.device) -> Callable[[], float]:
    """The clock plans are priced in: see the module docstring."""
    if device.type == "cuda":

        def wall() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return wall
    threads = max(1, torch.get_num_threads())
    return lambda: time.process_time() / threads


def _how(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda wall clock"
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    return f"process CPU time / threads (OMP_WAIT_POLICY={policy})"


def _batches(features: Sequence[Features], batch_size: int, pad: int, n: int) -> list[Batch]:
    """`n` batches of one length-grouped epoch (as training draws them, from a fixed seed), at
    evenly spaced quantiles of their padded width: a step's cost grows with its width, and the
    first few batches of a shuffled epoch can be far narrower or wider than its mean (on Rotten
    Tomatoes the first four averaged 20 tokens where the epoch averages 28)."""
    stream = length_grouped_batches(features, batch_size, pad, np.random.default_rng(12345))
    by_width = sorted(stream, key=lambda b: int(b.inputs["input_ids"].shape[1]))
    picks = [int((k + 0.5) * len(by_width) / n) for k in range(n)]
    return [by_width[i] for i in picks if i < len(by_width)]


def _random_batches(features: Sequence[Features], batch_size: int, pad: int, n: int) -> list[Batch]:
    """`n` batches of rows drawn at random, as the compression loop samples its soft-labelled
    batches (not length-grouped: each pads to its longest row, which makes them wider)."""
    rng = np.random.default_rng(54321)
    size = min(batch_size, len(features))
    out = []
    for _ in range(n):
        index = [int(i) for i in rng.choice(len(features), size=size, replace=False)]
        out.append(Batch(collate([features[i] for i in index], pad), index))
    return out


def _time(fn: Callable[[Batch], object], batches: list[Batch], clock: Callable[[], float]) -> float:
    """Cost per batch in steady state: every batch runs once untimed first, because the first
    call on a new shape costs up to twice as much (kernel and allocator set-up) and a job's
    thousands of steps reuse a few dozen shapes. Then each batch is timed `REPEATS` times and
    its cheapest run counts: interference (another process's cache traffic, a hypervisor
    taking the core) only ever adds cost, so the minimum is the step's own price, and one
    pass's mean varied by 20 % between calibrations on a quiet machine. A batch slower than
    `SLOW_RUN_S` is timed once (see there)."""
    first = []
    for b in batches:
        start = clock()
        fn(b)
        first.append(clock() - start)
    total = 0.0
    for b, untimed in zip(batches, first, strict=True):
        runs = []
        for _ in range(REPEATS if untimed < SLOW_RUN_S else 1):
            start = clock()
            fn(b)
            runs.append(clock() - start)
        total += min(runs)
    return total / len(batches)


def calibrate(
    teacher: nn.Module,
    make_student: Callable[[nn.Module], nn.Module] | None,
    features: Sequence[Features],
    *,
    batch_size: int,
    pad: int,
    device: torch.device,
    hidden_states: bool = False,
    soft_features: Sequence[Features] = (),
) -> Throughput:
    """Seconds per teacher training step, per compression step and per row scored.

    `make_student(copy_of_teacher)` builds the compression student (None: the student is a
    copy of the teacher). `features` are training rows: steps are timed on their lengths.
    `hidden_states`: the compression loop distils hidden states (the student returns them and
    a loss is taken on each), so its step is timed that way. `soft_features`: the rows the
    loop's soft-labelled batches come from (unbought and unlabelled rows; empty: `features`).
    """
    started = time.monotonic()
    clock = device_clock(device)
    batches = _batches(features, batch_size, pad, TIMED_STEPS)
    soft_batches = _random_batches(soft_features or features, batch_size, pad, len(batches))
    labels = torch.zeros(batch_size, dtype=torch.long, device=device)
    rng_state = torch.get_rng_state()

    def train_step(
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        hidden: bool = False,
        soft: bool = False,
    ) -> Callable[[Batch], None]:
        """One optimizer step as the loops take it: cross-entropy, plus (compression loop)
        a loss on every hidden state and a second, soft-labelled batch through the student."""
        partner = {id(b): s for b, s in zip(batches, soft_batches, strict=False)}

        def step(b: Batch) -> None:
            logits, states = forward(model, b.inputs, device, hidden_states=hidden)
            loss = F.cross_entropy(logits, labels[: len(b.index)])
            if states is not None:
                loss = loss + sum(h.pow(2).mean() for h in states)
            if soft:
                soft_logits, _ = forward(model, partner[id(b)].inputs, device)
                loss = loss - F.log_softmax(soft_logits, dim=-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()

        return step

    work = copy.deepcopy(teacher).to(device).train()
    teacher_step = _time(
        train_step(work, torch.optim.AdamW(work.parameters(), lr=1e-9)), batches, clock
    )
    rows = _batches(features, INFER_ROWS, pad, 2)
    work.eval()
    with torch.no_grad():
        teacher_row = _time(lambda b: forward(work, b.inputs, device), rows, clock) / INFER_ROWS

        def teacher_hidden(b: Batch) -> None:
            forward(work, b.inputs, device, hidden_states=hidden_states)

        teacher_fwd = _time(teacher_hidden, batches, clock)
    student = make_student(copy.deepcopy(teacher)) if make_student else copy.deepcopy(teacher)
    student.to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-9)
    student_train = _time(train_step(student, optimizer, hidden=hidden_states), batches, clock)
    with_soft = _time(
        train_step(student, optimizer, hidden=hidden_states, soft=True), batches, clock
    )
    student.eval()
    with torch.no_grad():
        student_row = _time(lambda b: forward(student, b.inputs, device), rows, clock) / INFER_ROWS
    torch.set_rng_state(rng_state)
    return Throughput(
        teacher_step_s=teacher_step,
        teacher_infer_row_s=teacher_row,
        student_step_s=student_train,
        student_infer_row_s=student_row,
        soft_batch_s=max(0.0, with_soft - student_train),
        teacher_forward_s=teacher_fwd,
        calibration_s=time.monotonic() - started,
        how=_how(device),
    )
