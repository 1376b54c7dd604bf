"""Per-step training metrics: reduced over ranks, then a log line, metrics.jsonl, TensorBoard.

Rank 0 writes `<run>/metrics.jsonl` (one `StepRecord` per logged step, with the attempt's
world size and start step) and `<run>/tensorboard/`; `<run>` is a local path or an object-store
URI (`Storage.location`): there TensorBoard writes to a node-local folder that is uploaded every
`TB_UPLOAD_S` and at the end. A step re-run after a restart appears
again in metrics.jsonl; `read_metrics` keeps the latest record of each step, the curve a person
plots (the test of a killed worker checks that it is continuous).
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
import time
from pathlib import Path
from typing import NotRequired, TypedDict

import torch

from forge_ray.storage import LineLog, is_local_location, read_lines, url_to_fs

METRICS_FILE = "metrics.jsonl"
TB_UPLOAD_S = 30.0  # object-store runs: how often the TensorBoard folder is uploaded
# Peak dense bf16 TFLOP/s of known accelerators (vendor sheets, without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def peak_tflops(configured: float | None, use_gpu: bool, threads: int) -> float:
    """Peak TFLOP/s of one worker: configured, a known GPU, or a CPU estimate
    (threads x 2.5 GHz x 2 FMA units x 8 fp32 lanes x 2 FLOPs, an AVX2 core)."""
    if configured:
        return configured
    if use_gpu and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tf in PEAK_TFLOPS.items():
            if key in name:
                return tf
        return 100.0
    return threads * 2.5e9 * 2 * 8 * 2 / 1e12


class StepAccumulator:
    """Sums of one step's micro batches on this rank; `reduce` all-reduces them over ranks."""

    def __init__(self, num_sources: int, moe_shape: tuple[int, int] | None):
        self.loss_sum = torch.zeros(2, dtype=torch.float64)  # lm loss x tokens, aux x micro batches
        self.tokens = torch.zeros(1, dtype=torch.float64)
        self.micro = 0
        self.source_loss = torch.zeros(num_sources, dtype=torch.float64)
        self.source_tokens = torch.zeros(num_sources, dtype=torch.float64)
        self.experts = torch.zeros(moe_shape, dtype=torch.float64) if moe_shape else None

    def add(self, token_loss_BT: torch.Tensor, mask_BT: torch.Tensor, source_B: torch.Tensor, aux, counts) -> None:
        per_seq_sum = (token_loss_BT.detach() * mask_BT).sum(1).double()
        per_seq_n = mask_BT.sum(1).double()
        self.loss_sum[0] += per_seq_sum.sum()
        self.loss_sum[1] += float(aux)
        self.tokens += per_seq_n.sum()
        self.micro += 1
        self.source_loss.index_add_(0, source_B.cpu(), per_seq_sum.cpu())
        self.source_tokens.index_add_(0, source_B.cpu(), per_seq_n.cpu())
        if self.experts is not None and counts is not None:
            self.experts += counts.detach().double().cpu()

    def reduce(self, world_size: int, device: torch.device | str = "cpu") -> dict:
        """Sums over all ranks (`device`: where the collective runs, CUDA for NCCL)."""
        import torch.distributed as dist

        parts = [self.loss_sum, self.tokens, torch.tensor([float(self.micro)], dtype=torch.float64),
                 self.source_loss, self.source_tokens]
        if self.experts is not None:
            parts.append(self.experts.flatten())
        flat = torch.cat(parts)
        if world_size > 1:
            flat = flat.to(device)
            dist.all_reduce(flat)
            flat = flat.cpu()
        i = 0
        out = {}
        for name, n in (("loss_sum", 2), ("tokens", 1), ("micro", 1), ("source_loss", len(self.source_loss)),
                        ("source_tokens", len(self.source_tokens))):
            out[name] = flat[i : i + n]
            i += n
        if self.experts is not None:
            out["experts"] = flat[i:].view_as(self.experts)
        return out


class LossRecord(TypedDict):
    """A step's losses, from the sums of every rank's micro batches."""

    loss: float  # lm_loss + aux_loss_coef x aux_loss
    lm_loss: float  # mean next-token cross-entropy per target token (nats)
    aux_loss: float  # MoE load-balancing loss, mean over micro batches (0 for dense)
    loss_by_source: dict[str, float]  # lm loss per mixture source present in the step
    expert_tokens: NotRequired[list[int]]  # MoE: tokens routed to each expert, summed over layers
    expert_tokens_by_layer: NotRequired[list[list[int]]]  # MoE: [MoE layer][expert]


class StepRecord(LossRecord):
    """One line of metrics.jsonl; its numeric part (`numeric_metrics`) goes to `ray.train.report`
    and into the checkpoint's state.json."""

    step: int  # 0-based; the log line shows step + 1
    lr: float
    grad_norm: float  # before clipping
    tokens_per_s: float  # global batch tokens / step_time_s
    step_time_s: float  # from asking for the batch to the metrics being summed over ranks
    data_wait_s: float  # of which waiting for the batch
    mfu: float  # FLOPs counted by the dry run x tokens/s / (peak x workers)
    world_size: int
    start_step: int  # where this attempt started (a restart re-runs steps)
    tokens_seen: int
    time: float  # unix time
    target_tokens: NotRequired[int]  # tokens the loss counted in the step, all ranks (SFT: the assistant's)


def loss_record(reduced: dict, sources: list[str], aux_coef: float) -> LossRecord:
    """Loss (total, LM, MoE aux), loss per domain and routed tokens per expert from reduced sums."""
    lm = float(reduced["loss_sum"][0] / reduced["tokens"][0].clamp(min=1))
    aux = float(reduced["loss_sum"][1] / reduced["micro"][0].clamp(min=1))
    rec = LossRecord(loss=lm + aux_coef * aux, lm_loss=lm, aux_loss=aux, loss_by_source={
        s: float(reduced["source_loss"][i] / reduced["source_tokens"][i])
        for i, s in enumerate(sources)
        if reduced["source_tokens"][i] > 0
    })
    if "experts" in reduced:
        rec["expert_tokens"] = [int(v) for v in reduced["experts"].sum(0).tolist()]
        rec["expert_tokens_by_layer"] = [[int(v) for v in row] for row in reduced["experts"].tolist()]
    return rec


def numeric_metrics(rec: StepRecord) -> dict[str, float]:
    """The record's numbers alone (what Ray Train's report and a checkpoint's state keep)."""
    return {k: v for k, v in rec.items() if isinstance(v, int | float)}


def format_line(rec: StepRecord, total_steps: int) -> str:
    line = (
        f"step {rec['step'] + 1:>5}/{total_steps}  loss {rec['loss']:.4f}  lm {rec['lm_loss']:.4f}"
    )
    if "expert_tokens" in rec:
        line += f"  aux {rec['aux_loss']:.3f}"
    line += (
        f"  lr {rec['lr']:.2e}  gnorm {rec['grad_norm']:.3f}  {rec['tokens_per_s']:,.0f} tok/s"
        f"  step {rec['step_time_s'] * 1e3:.0f} ms (data {rec['data_wait_s'] * 1e3:.0f} ms)"
        f"  mfu {rec['mfu']:.1%}  w={rec['world_size']}"
    )
    if "expert_tokens" in rec:
        line += f"  experts {rec['expert_tokens']}"
    return line


class MetricsWriter:
    """Rank 0's sinks: metrics.jsonl (a `LineLog`: flushed per record) and TensorBoard."""

    def __init__(self, run_dir: str, tensorboard: bool):
        self.run_dir = str(run_dir)
        self.log = LineLog(posixpath.join(self.run_dir, METRICS_FILE))
        self.path = self.log.path
        self.tb, self.tb_local, self.uploaded = None, None, time.monotonic()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            if is_local_location(self.run_dir):
                tb_dir = str(Path(self.run_dir) / "tensorboard")
            else:  # written locally (a log), uploaded to <run>/tensorboard/
                self.tb_local = tb_dir = tempfile.mkdtemp(prefix="forge-tb-")
            self.tb = SummaryWriter(tb_dir, flush_secs=10)

    def write(self, rec: StepRecord) -> None:
        self.log.write(json.dumps(rec))
        if self.tb is not None:
            step = rec["step"] + 1
            for key in ("loss", "lm_loss", "aux_loss", "lr", "grad_norm", "tokens_per_s", "step_time_s",
                        "data_wait_s", "mfu"):
                self.tb.add_scalar(f"train/{key}", rec[key], step)
            for source, v in rec.get("loss_by_source", {}).items():
                self.tb.add_scalar(f"loss_by_source/{source}", v, step)
            for e, n in enumerate(rec.get("expert_tokens", [])):
                self.tb.add_scalar(f"expert_tokens/{e}", n, step)
            if self.tb_local and time.monotonic() - self.uploaded > TB_UPLOAD_S:
                self._upload_tb()

    def _upload_tb(self) -> None:
        self.tb.flush()
        fs, path = url_to_fs(posixpath.join(self.run_dir, "tensorboard"))
        for name in sorted(p for p in Path(self.tb_local).iterdir() if p.is_file()):
            fs.put_file(str(name), posixpath.join(path, name.name))
        self.uploaded = time.monotonic()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            if self.tb_local:
                self._upload_tb()
                shutil.rmtree(self.tb_local, ignore_errors=True)


def read_metrics(run_dir: str | Path) -> list[StepRecord]:
    """The run's curve: the latest record of each step, in step order (`run_dir`: path or URI)."""
    latest: dict[int, StepRecord] = {}
    for line in read_lines(posixpath.join(str(run_dir), METRICS_FILE)):
        rec = json.loads(line)
        latest[rec["step"]] = rec
    return [latest[k] for k in sorted(latest)]


def read_all_metrics(run_dir: str | Path) -> list[StepRecord]:
    """Every record in write order, re-run steps included (one per attempt)."""
    return [json.loads(x) for x in read_lines(posixpath.join(str(run_dir), METRICS_FILE))]
