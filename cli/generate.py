"""Sample text, code, images, speech or molecules from a trained run, prompted by any modality."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, err_console, print_json, progress_bar


def generate(
    run: Path = typer.Argument(..., help="Run folder made by `mmlm train` (config.json, model.safetensors, tokenizers)."),
    out: Path = typer.Option(..., "--out", help="Folder to write sample-<k>.txt|.png|.wav|.smi and samples.jsonl into (new, empty, or an earlier output, which is replaced)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="A text prompt."),
    prompt_image: Optional[Path] = typer.Option(None, "--prompt-image", help="A PNG/JPEG image prompt."),
    prompt_audio: Optional[Path] = typer.Option(None, "--prompt-audio", help="A WAV/FLAC speech prompt."),
    prompt_smiles: Optional[str] = typer.Option(None, "--prompt-smiles", help="A SMILES molecule prompt."),
    modality: Optional[str] = typer.Option(None, "--modality", help="What to generate: text, code, image, speech or molecule. Default: the model chooses (any number of segments, until <eos>)."),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples, decoded together as one batch."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Generated tokens per sample at most. Default: one image for --modality image, else 256 (or what fits the context)."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature; 0 is greedy."),
    top_k: int = typer.Option(0, "--top-k", help="Draw from the k likeliest ids only (0: off)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: the likeliest ids holding this much probability (1: off)."),
    cfg_scale: float = typer.Option(1.0, "--cfg-scale", help="Classifier-free guidance scale (needs a prompt; 1: off): uncond + s * (cond - uncond)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the sampler; the same seed gives the same samples. Default: random (recorded in samples.jsonl)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    json_out: bool = typer.Option(False, "--json", help="Print the samples.jsonl records as plain JSON on stdout."),
) -> None:
    """Sample text, code, images, speech or molecules from a trained run, prompted by any modality."""
    import json

    from mmlm.atomic import check_output_dir
    from mmlm.generate import SampleSettings, earlier_output, generate as sample, load_run, read_prompts, write_samples

    settings = SampleSettings(num_samples=num_samples, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                              top_p=top_p, cfg_scale=cfg_scale, seed=seed)
    settings.check()
    check_output_dir(out, earlier_output)  # before any work: a bad --out fails at once
    prompts = read_prompts(text=prompt, image=prompt_image, audio=prompt_audio, smiles=prompt_smiles)
    loaded = load_run(run, device)
    with _Progress() as on_progress:
        samples = sample(loaded, prompts, modality, settings, on_progress=on_progress)
    write_samples(samples, out)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").split("\n") if line]
    if json_out:
        print_json(records)
        return
    _show(records, out)


class _Progress:
    """A bar of generated tokens that appears with the first one, so an input error shows alone."""

    def __enter__(self):
        self._ctx = self.bar = None
        self.done = 0
        return self

    def __call__(self, stage: str, done: int, total: int, tokens: int = 0) -> None:
        if self.bar is None:
            self._ctx = progress_bar()
            self.bar = self._ctx.__enter__()
            self.task = self.bar.add_task(stage, total=total)
        self.done = done
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc):
        if self.bar is None:
            return False
        self.bar.update(self.task, total=self.done)  # every sample may end before --max-tokens
        return self._ctx.__exit__(*exc)


def _show(records: list[dict], out: Path) -> None:
    from rich.table import Table

    t = Table(title=f"{len(records)} sample(s) in {out}")
    for col in ("sample", "tokens", "segment", "file", "note"):
        t.add_column(col, justify="right" if col == "tokens" else "left")
    for k, rec in enumerate(records, 1):
        segments = rec["segments"] or [None]
        for seg in segments:
            if seg is None:
                t.add_row(str(k), str(len(rec["tokens"])), "-", "-", "no segment (ended at once)")
                continue
            note = ""
            if seg["modality"] == "molecule":
                note = "valid SMILES" if seg["valid"] else f"invalid SMILES: {seg['invalid_reason']}"
            elif seg["modality"] == "speech":
                note = f"{seg['seconds']:g} s"
            elif seg["modality"] == "image":
                note = "x".join(map(str, seg["shape"][:2]))
            t.add_row(str(k), str(seg["end"] - seg["start"]), seg["modality"], seg["file"], note)
    console.print(t)
    err_console.print(f"seed {records[0]['settings']['seed']}", highlight=False)
