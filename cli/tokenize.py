"""Turn raw files of seven modalities into token datasets sharing one vocabulary."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help=__doc__, no_args_is_help=True)


# --- shared options (functions, so every command gets its own parameter objects) -------------

def _inputs(what: str):
    return typer.Argument(..., help=f"{what} files or folders (folders are searched recursively)", show_default=False)


def _data():
    return typer.Option(..., "--data", help="data root shared by all datasets (vocab.json, tokenizers/, one folder per dataset)")


def _name():
    return typer.Option(None, "--name", help="dataset name (default: the modality)")


def _strict():
    return typer.Option(False, "--strict", help="fail on the first invalid item instead of skipping and counting it")


def _json():
    return typer.Option(False, "--json", help="print the summary as JSON on stdout")


def _seed():
    return typer.Option(0, "--seed", help="seed for tokenizer training and the order of paired segments")


def _vocab_size():
    return typer.Option(None, "--vocab-size", help="BPE vocabulary when the text tokenizer is trained here (default 4096)")


def _train_on():
    return typer.Option(None, "--train-on", help="extra text/code files or folders to train the shared BPE on (repeatable)")


def _image_size():
    return typer.Option(None, "--image-size", help="images are resized to this square (default 32)")


def _patch():
    return typer.Option(None, "--patch", help="patch side in pixels; one code per patch (default 4)")


def _codebook():
    return typer.Option(None, "--codebook", help="image codebook size (default 256)")


def _tokenizer():
    return typer.Option(None, "--tokenizer", help="image tokenizer: kmeans (patch codebook; default) or vqvae (learnt "
                        "encoder/decoder, trained here; see docs/cli/tokenize.md)")


def _downsample():
    return typer.Option(None, "--downsample", help="vqvae: image side / code grid side, 2, 4, 8 or 16 (default 4)")


def _train_steps():
    return typer.Option(None, "--train-steps", help="vqvae: training steps of 64 images (default 1500)")


def _units():
    return typer.Option(None, "--units", help="number of speech units (k-means clusters) (default 100)")


def _external(what: str):
    return typer.Option(False, "--external", help=f"INPUT holds externally made {what}, imported as they are")


# --- rendering ----------------------------------------------------------------------------------

def _progress_columns():
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Tokens(ProgressColumn):
        def render(self, task):
            n = task.fields.get("tokens", 0)
            return Text(f"{n:,} tok" if n else "")

    class Throughput(ProgressColumn):
        def render(self, task):
            n, t = task.fields.get("tokens", 0), task.elapsed
            return Text(f"{n / t:,.0f} tok/s" if n and t else "")

    return Tokens(), Throughput()


class _Bars:
    """An `on_progress` callback drawing one rich bar per stage."""

    def __init__(self, progress):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int, tokens: int = 0) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total or None, tokens=0)
        self.progress.update(self.tasks[stage], completed=done, total=total or None, tokens=tokens)


def _with_progress(fn, *args, **kwargs):
    """Run `fn` with rich progress bars on stderr when it is a terminal (logs and pipes stay clean)."""
    from .common import err_console, progress_bar

    if not err_console.is_terminal:
        return fn(*args, **kwargs)
    with progress_bar(*_progress_columns()) as progress:
        return fn(*args, on_progress=_Bars(progress), **kwargs)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    from .common import console, err_console

    table = Table(title=f"dataset {summary['name']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in ("kind", "path", "files", "documents", "tokens", "skipped", "vocab_size", "seconds"):
        value = summary[key]
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    table.add_row("tokenizers", ", ".join([f"{s} (trained)" for s in summary["trained"]] +
                                          [f"{s} (reused)" for s in summary["reused"]]))
    console.print(table)
    for space, rep in summary.get("reports", {}).items():
        console.print(f"{space} tokenizer on {rep['images']} {rep['eval_on']} images: PSNR {rep['psnr']:.2f} dB, "
                      f"SSIM {rep['ssim']:.3f}, codebook usage {rep['usage']:.0%} (perplexity {rep['perplexity']:.1f}), "
                      f"{rep['codes_per_image']} codes = {rep['bits_per_image']:.0f} bits per image, "
                      f"trained in {rep['train_seconds']:.0f} s on {rep['device']}", highlight=False)
    if summary["skipped"]:
        err_console.print(f"[yellow]skipped {summary['skipped']:,} item(s)[/] (--strict fails instead); first ones:",
                          highlight=False, soft_wrap=True, markup=True)
        for why in summary["skipped_examples"][:5]:
            err_console.print(f"  {why}", highlight=False, markup=False, soft_wrap=True)


def _tokenize(kind: str, inputs: List[Path], data: Path, name: Optional[str], strict: bool, as_json: bool, **opts):
    from mmlm.dataset_build import tokenize_dataset

    from .common import print_json

    summary = _with_progress(tokenize_dataset, kind, inputs, data, name=name, strict=strict, **opts)
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary)


def _allow_outside():
    return typer.Option(False, "--allow-outside", help="Read media files outside the manifest's folder "
                        "(../x.png, /abs/path); refused by default, so a manifest from elsewhere cannot make mmlm read them.")


# --- commands -----------------------------------------------------------------------------------

@app.command("text")
def text(inputs: List[Path] = _inputs(".txt/.md, or .jsonl with a \"text\" field"), data: Path = _data(),
         name: Optional[str] = _name(), strict: bool = _strict(), vocab_size: Optional[int] = _vocab_size(),
         train_on: Optional[List[Path]] = _train_on(), seed: int = _seed(), json: bool = _json()) -> None:
    """Natural-language text: byte-level BPE (shared with code)."""
    _tokenize("text", inputs, data, name, strict, json, vocab_size=vocab_size, train_on=train_on, seed=seed)


@app.command("code")
def code(inputs: List[Path] = _inputs("source"), data: Path = _data(), name: Optional[str] = _name(),
         strict: bool = _strict(), vocab_size: Optional[int] = _vocab_size(),
         train_on: Optional[List[Path]] = _train_on(), seed: int = _seed(), json: bool = _json()) -> None:
    """Source code, one document per file: the same byte-level BPE as text."""
    _tokenize("code", inputs, data, name, strict, json, vocab_size=vocab_size, train_on=train_on, seed=seed)


@app.command("image")
def image(inputs: List[Path] = _inputs("PNG/JPEG"), data: Path = _data(), name: Optional[str] = _name(),
          strict: bool = _strict(), image_size: Optional[int] = _image_size(), patch: Optional[int] = _patch(),
          codebook: Optional[int] = _codebook(), seed: int = _seed(), external: bool = _external("code grids (.npy, int array n x h x w)"),
          tokenizer: Optional[str] = _tokenizer(), downsample: Optional[int] = _downsample(),
          train_steps: Optional[int] = _train_steps(), json: bool = _json()) -> None:
    """Images: a fixed grid of codes from a k-means patch codebook, a learnt VQ-VAE, or imported code grids."""
    _tokenize("image", inputs, data, name, strict, json, image_size=image_size, patch=patch, codebook=codebook,
              seed=seed, external=external, tokenizer=tokenizer, downsample=downsample, train_steps=train_steps)


@app.command("speech")
def speech(inputs: List[Path] = _inputs("WAV/FLAC"), data: Path = _data(), name: Optional[str] = _name(),
           strict: bool = _strict(), units: Optional[int] = _units(), seed: int = _seed(),
           external: bool = _external("units (.npy n x T, or .npz of 1-D arrays)"), json: bool = _json()) -> None:
    """Speech: 50 units per second from frame features and k-means (or imported units)."""
    _tokenize("speech", inputs, data, name, strict, json, units=units, seed=seed, external=external)


@app.command("molecule")
def molecule(inputs: List[Path] = _inputs(".smi/.txt (one SMILES per line) or .csv with a smiles column"),
             data: Path = _data(), name: Optional[str] = _name(), strict: bool = _strict(), seed: int = _seed(),
             json: bool = _json()) -> None:
    """Molecules as SMILES: the standard SMILES regex split; invalid lines are skipped and counted."""
    _tokenize("molecule", inputs, data, name, strict, json, seed=seed)


@app.command("image-text")
def image_text(inputs: List[Path] = _inputs('.jsonl manifest of {"image": path, "text": caption}'),
               data: Path = _data(), name: Optional[str] = _name(), strict: bool = _strict(),
               image_size: Optional[int] = _image_size(), patch: Optional[int] = _patch(),
               codebook: Optional[int] = _codebook(), vocab_size: Optional[int] = _vocab_size(),
               train_on: Optional[List[Path]] = _train_on(), seed: int = _seed(), tokenizer: Optional[str] = _tokenizer(),
               downsample: Optional[int] = _downsample(), train_steps: Optional[int] = _train_steps(),
               json: bool = _json(), allow_outside: bool = _allow_outside()) -> None:
    """Image-caption pairs, caption->image or image->caption per document (drawn with --seed)."""
    _tokenize("image-text", inputs, data, name, strict, json, image_size=image_size, patch=patch,
              codebook=codebook, vocab_size=vocab_size, train_on=train_on, seed=seed, tokenizer=tokenizer,
              downsample=downsample, train_steps=train_steps, allow_outside=allow_outside)


@app.command("speech-text")
def speech_text(inputs: List[Path] = _inputs('.jsonl manifest of {"audio": path, "text": transcript}'),
                data: Path = _data(), name: Optional[str] = _name(), strict: bool = _strict(),
                units: Optional[int] = _units(), vocab_size: Optional[int] = _vocab_size(),
                train_on: Optional[List[Path]] = _train_on(), seed: int = _seed(), json: bool = _json(),
                allow_outside: bool = _allow_outside()) -> None:
    """Speech-transcript pairs, transcript->speech or speech->transcript per document (drawn with --seed)."""
    _tokenize("speech-text", inputs, data, name, strict, json, units=units, vocab_size=vocab_size,
              train_on=train_on, seed=seed, allow_outside=allow_outside)


@app.command("demo")
def demo(data: Path = _data(), json: bool = _json(),
         image_tokenizer: str = typer.Option("kmeans", "--image-tokenizer",
                                             help="kmeans, or vqvae (a learnt tokenizer: adds minutes on CPU)")) -> None:
    """Build the built-in demo corpus (all seven kinds, from pip-installable sources) into --data."""
    from mmlm.demo_build import build_demo

    from .common import print_json

    result = _with_progress(build_demo, data, image_tokenizer=image_tokenizer)
    if json:
        print_json(result)
        return
    _print_datasets(result["datasets"], title=f"demo corpus in {data} ({result['seconds']:.0f} s)")


def _print_datasets(datasets: dict, title: str) -> None:
    from rich.table import Table

    from .common import console

    table = Table(title=title)
    for col in ("dataset", "kind", "documents", "tokens"):
        table.add_column(col, justify="right" if col in ("documents", "tokens") else "left")
    for name, d in datasets.items():
        table.add_row(name, d.get("kind", d.get("modality", "")), f"{d['documents']:,}", f"{d['tokens']:,}")
    console.print(table)


@app.command("info")
def info(data: Path = _data(), json: bool = _json()) -> None:
    """Vocabulary ranges, special tokens and datasets of a data root."""
    from rich.table import Table

    from mmlm.dataset_build import data_info

    from .common import console, print_json

    result = data_info(data)
    if json:
        print_json(result)
        return
    table = Table(title=f"vocabulary of {data}: {result['vocab_size']:,} ids")
    for col in ("token space", "first id", "last id", "ids"):
        table.add_column(col, justify="left" if col == "token space" else "right")
    n_special = len(result["special"])
    table.add_row("special", "0", str(n_special - 1), str(n_special))
    for space, (first, last) in result["ranges"].items():
        table.add_row(space + (" (text and code)" if space == "text" else ""), str(first), str(last),
                      f"{last - first + 1:,}")
    console.print(table)
    if result["datasets"]:
        _print_datasets(result["datasets"], title="datasets")
    else:
        console.print("no datasets yet")


@app.command("decode")
def decode(data: Path = _data(), dataset: str = typer.Option(..., "--dataset", help="dataset name"),
           doc: int = typer.Option(..., "--doc", help="document index (0-based)"),
           out: Path = typer.Option(..., "--out", help="file to write (a folder for a paired document)")) -> None:
    """Write one document back as a file: text (UTF-8), PNG, WAV, or a folder with both parts of a pair."""
    from mmlm.media import decode_document

    from .common import console

    for path in decode_document(data, dataset, doc, out):
        console.print(str(path), highlight=False)
