"""The models a server answers for, by the name a client puts in `model`: `dense` (Whisper base, every
module) and one name per gate set (its directory's name). Each is a `Transcriber`; each lane of the
scheduler (a model and a temperature schedule) gets its own `LongFormDecoder` over that model's
pipeline, built on first use."""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from pathlib import Path

from ctxprune.errors import CtxpruneError
from ctxprune.longform.decoder import LongFormDecoder, LongFormOptions
from ctxprune.paths import ARTIFACTS
from ctxprune.runtime.decoding import GUARDED, DecodeOptions
from ctxprune.stack import StackSpec
from ctxprune.transcriber import Transcriber

DENSE = "dense"
BASE, DEFAULT_LONG_FORM = StackSpec(), LongFormOptions()
FALLBACK = LongFormOptions().temperatures  # temperature 0 in a request: Whisper's fallback schedule


def shipped_gate_sets() -> list[Path]:
    """The gate sets in the checkout's artifacts/gates (each a directory with a predictor)."""
    root = ARTIFACTS / "gates"
    return sorted(p for p in root.iterdir() if (p / "predictor.json").is_file()) if root.is_dir() else []


def temperatures_for(temperature: float) -> tuple[float, ...]:
    """OpenAI's rule: 0 means Whisper's fallback (0, 0.2, … 1.0 while the output looks bad); a value
    above 0 samples at that temperature once."""
    return FALLBACK if temperature == 0 else (temperature,)


class ServedModels:
    """Loads `dense` and every gate set in `gate_sets` on `spec`'s device (the adapter, if any, under
    all of them); `max_batch` windows per decoding step."""

    def __init__(
        self,
        gate_sets: list[Path],
        spec: StackSpec = BASE,
        options: DecodeOptions = GUARDED,
        long_form: LongFormOptions = DEFAULT_LONG_FORM,
        max_batch: int = 8,
    ):
        names = [DENSE] + [Path(g).name for g in gate_sets]
        if len(set(names)) != len(names):
            raise CtxpruneError(f"two models would share a name: {', '.join(names)} (rename a gate set dir)")
        self.options, self.long_form, self.max_batch = options, long_form, max_batch
        dense = Transcriber(spec, options, long_form)
        self.transcribers = {DENSE: dense}
        for path in map(Path, gate_sets):  # the loop guard's dense fallback is `dense`'s model, shared
            gated = Transcriber(spec.with_gates(path), options, long_form, teacher=dense.stack.gated)
            self.transcribers[path.name] = gated
        for t in self.transcribers.values():
            t.report_gates = True  # every segment says what ran, dense too (the web page draws it)
        self.decoder = cache(self._decoder)

    @property
    def names(self) -> list[str]:
        return list(self.transcribers)

    def __contains__(self, name: str) -> bool:
        return name in self.transcribers

    def __getitem__(self, name: str) -> Transcriber:
        return self.transcribers[name]

    def reads_context(self, name: str) -> bool:
        return self.transcribers[name].stack.policy.reads_context

    def _decoder(self, name: str, temperatures: tuple[float, ...]) -> LongFormDecoder:
        pipeline = self.transcribers[name].stack.pipeline
        long_form = replace(self.long_form, temperatures=temperatures)
        return LongFormDecoder(pipeline, "transcribe", long_form, self.options, self.max_batch)
