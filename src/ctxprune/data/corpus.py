"""`ctxprune data build`: a multilingual, multitask speech corpus synthesized on this machine.

Two phases. The plan decides every utterance (text, split, voice family and voice, speed, pitch, SNR,
padding, seed) from the text sources and the seed, and is saved as `plan.jsonl`. Synthesis renders the
plan in parallel; each FLAC is written atomically, so a re-run skips finished files. A saved plan is all
that synthesis needs, which is how the GPU machine builds audio without the text sources.

Splits are assigned by a hash of the English sentence, so a sentence (and its translations) lives in
exactly one split for every language. Monolingual sentences (no English) go to train only.
`test_unseen_voice` uses voices that no other split uses: a held-out Pico prosody, the second MBROLA
voice of a language, and held-out espeak-ng variants. The `espeak` preset is the espeak-only corpus of
issues 1-12, planned exactly as then (same utterance ids and audio), so old results can be reproduced.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import soundfile as sf

from ctxprune.data.gettext_pairs import catalogs_digest, read_pairs
from ctxprune.data.monolingual import monolingual_sentences
from ctxprune.data.synth import LANGUAGES, Utterance, synthesize_to
from ctxprune.data.voices import MBROLA_VOICES, PICO_VOICES, check_voice, versions
from ctxprune.errors import CtxpruneError
from ctxprune.paths import write_bytes_atomic, write_json_atomic

SPLITS = ("train", "dev", "test", "test_unseen_voice")
TRAIN_VOICES = ("m1", "m2", "m3", "m4", "f1", "f2", "f3")  # espeak-ng's male and female variants
UNSEEN_VOICES = ("m6", "f4")  # never used outside test_unseen_voice
PICO_PROSODY = tuple((speed, pitch) for speed in (85, 95, 105) for pitch in (90, 100, 110))  # percent
PICO_UNSEEN_PROSODY = ((115, 80), (80, 120))  # never used outside test_unseen_voice
TEMPLATE_SHARE = 0.2
MONO_SHARE = 0.3  # of the train rows of a language that has monolingual text
# Hash buckets out of 100 for the English sentence: test, dev and unseen-voice pools; the rest is train.
_BUCKETS = {"test": range(0, 8), "dev": range(8, 12), "test_unseen_voice": range(12, 16)}
NATURAL = ("pico", "mbrola", "espeak")
PRESETS = {
    "small": {"train": 12, "dev": 3, "test": 4, "test_unseen_voice": 3, "hours": 0.0, "families": NATURAL},
    "full": {
        "train": None,
        "dev": 100,
        "test": 300,
        "test_unseen_voice": 150,
        "hours": 64.0,
        "families": NATURAL,
    },
    "espeak": {
        "train": None,
        "dev": 100,
        "test": 300,
        "test_unseen_voice": 150,
        "hours": 20.0,
        "families": ("espeak",),
    },
}
# the share of each family where a language has it (mbrola: de, fr, en); the rest goes to pico
FAMILY_SHARE = {"mbrola": 0.25, "espeak": 0.25}
# the splits whose size per language a build can set, and the BuildConfig field that sets it
ROW_FIELDS = {"test": "test_rows", "test_unseen_voice": "unseen_rows"}


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


@dataclass(frozen=True)
class BuildConfig:
    languages: tuple[str, ...] = LANGUAGES
    preset: str = "small"
    hours: float | None = None  # train hours over all languages; None: the preset's
    seed: int = 0
    # utterances per language in the test and unseen-voice splits; None: the preset's. Each split draws
    # from its own random stream, so more rows extend the preset's rows and change no other split.
    test_rows: int | None = None
    unseen_rows: int | None = None

    def __post_init__(self):
        bad = [lang for lang in self.languages if lang not in LANGUAGES]
        if bad:
            raise CtxpruneError(
                f"unsupported language(s) {', '.join(bad)}; supported: {', '.join(LANGUAGES)}"
            )
        if self.preset not in PRESETS:
            raise CtxpruneError(f"unknown preset {self.preset!r}; use one of: {', '.join(PRESETS)}")
        if self.hours is not None and self.hours < 0:
            raise CtxpruneError("--hours must not be negative")
        for field in ROW_FIELDS.values():
            if getattr(self, field) is not None and getattr(self, field) < 1:
                raise CtxpruneError(f"{_option(field)} must be at least 1")

    @property
    def train_hours(self) -> float:
        return PRESETS[self.preset]["hours"] if self.hours is None else self.hours

    def rows_asked(self, split: str) -> int | None:
        """Utterances per language asked for a split; None: the preset's (or, for train, its hours)."""
        return getattr(self, ROW_FIELDS[split]) if split in ROW_FIELDS else None

    def to_json(self) -> dict:
        # the row counts only when given, so that a corpus built before they existed keeps its config
        out = {**asdict(self), "languages": list(self.languages)}
        return {k: v for k, v in out.items() if v is not None or k not in ROW_FIELDS.values()}


def split_of(english: str) -> str:
    bucket = int(hashlib.sha1(english.casefold().encode()).hexdigest(), 16) % 100
    return next((s for s, r in _BUCKETS.items() if bucket in r), "train")


def _estimated_seconds(u: Utterance) -> float:
    words_per_minute = 1.55 * u.speed if u.family == "pico" else u.speed  # Pico: ~155 wpm at 100 %
    return len(u.text.split()) * 60 / words_per_minute + u.pad_before + u.pad_after + 0.3


def _sentences(language: str, n_templates: int, seed: int) -> list[tuple[str, str, str]]:
    """(text, english, source) for a language: gettext pairs (English: their English sides) + templates."""
    from ctxprune.data.templates import template_sentences  # text-side only; synthesis from a plan needs none

    if language == "en":
        seen, pairs = set(), []
        for other in ("de", "fr", "es", "it"):
            for p in read_pairs(other):
                if p.english.casefold() not in seen:
                    seen.add(p.english.casefold())
                    pairs.append((p.english, p.english, f"gettext:{p.source}"))
    else:
        pairs = [(p.text, p.english, f"gettext:{p.source}") for p in read_pairs(language)]
    templates = [
        (t.text, t.english, f"template:{t.template}") for t in template_sentences(language, n_templates, seed)
    ]
    return pairs + templates


def _voice(rng: random.Random, language: str, split: str, families: tuple[str, ...]) -> dict:
    """Family, voice, speed and pitch of one utterance. With espeak alone, the draws are those of issues
    1-12 (the `espeak` preset reproduces that corpus); otherwise the family is drawn first."""
    unseen = split == "test_unseen_voice"
    family = "espeak"
    if families != ("espeak",):
        r, family = rng.random(), "pico"
        if language in MBROLA_VOICES and r < FAMILY_SHARE["mbrola"]:
            family = "mbrola"
        elif r >= 1 - FAMILY_SHARE["espeak"]:
            family = "espeak"
    if family == "espeak":
        voice = rng.choice(UNSEEN_VOICES if unseen else TRAIN_VOICES)
        return {"voice": voice, "speed": rng.randrange(140, 211), "pitch": rng.randrange(30, 71)}
    if family == "mbrola":  # the first voice of a language trains, the second is held out
        voice = MBROLA_VOICES[language][1 if unseen else 0]
        return {
            "voice": voice,
            "speed": rng.randrange(130, 191),
            "pitch": rng.randrange(35, 66),
            "family": family,
        }
    speed, pitch = rng.choice(PICO_UNSEEN_PROSODY if unseen else PICO_PROSODY)
    return {"voice": PICO_VOICES[language], "speed": speed, "pitch": pitch, "family": family}


def _utterance(
    rng: random.Random,
    language: str,
    split: str,
    item: tuple[str, str | None, str],
    seed: int,
    families: tuple[str, ...],
) -> Utterance:
    text, english, source = item
    params = {
        "language": language,
        "text": text,
        "english": english,
        "split": split,
        **_voice(rng, language, split, families),
        "snr_db": round(rng.uniform(12.0, 35.0), 1),
        "pad_before": round(rng.uniform(0.1, 0.6), 2),
        "pad_after": round(rng.uniform(0.1, 0.6), 2),
        "seed": rng.randrange(2**31),
        "source": source,
    }
    # an espeak utterance has no "family" key here, so that its id is the one issues 1-12 gave it
    digest = hashlib.sha1(json.dumps([seed, params], sort_keys=True).encode()).hexdigest()[:12]
    return Utterance(id=f"{language}-{digest}", **params)


def plan(config: BuildConfig) -> list[Utterance]:
    """Every utterance of the corpus, decided up front and deterministically."""
    preset = PRESETS[config.preset]
    families = preset["families"]
    per_language_seconds = 3600 * config.train_hours / len(config.languages)
    utterances = []
    for language in config.languages:
        n_templates = 200 if config.preset == "small" else 4000
        pools: dict[str, list] = {s: [] for s in SPLITS}
        for item in _sentences(language, n_templates, config.seed):
            pools[split_of(item[1])].append(item)
        mono = [(text, None, source) for text, source in monolingual_sentences(language)]
        for split in SPLITS:
            rng = random.Random(f"{config.seed}/{language}/{split}")
            pool = pools[split]
            rng.shuffle(pool)
            gettext_items = [i for i in pool if i[2].startswith("gettext")]
            template_items = [i for i in pool if i[2].startswith("template")]
            mono_items = list(mono) if split == "train" and families != ("espeak",) else []
            rng.shuffle(mono_items)
            asked = config.rows_asked(split)
            want = preset[split] if asked is None else asked
            chosen, seconds = [], 0.0
            while gettext_items or template_items:
                if mono_items and rng.random() < MONO_SHARE:
                    items = mono_items
                else:
                    use_template = template_items and (not gettext_items or rng.random() < TEMPLATE_SHARE)
                    items = template_items if use_template else gettext_items
                utt = _utterance(rng, language, split, items.pop(), config.seed, families)
                chosen.append(utt)
                seconds += _estimated_seconds(utt)
                if (want is not None and len(chosen) >= want) or (
                    want is None and seconds >= per_language_seconds
                ):
                    break
            if asked is not None and len(chosen) < asked:
                raise CtxpruneError(
                    f"the {split} split of {language} has only {len(chosen)} sentences; "
                    f"pass {_option(ROW_FIELDS[split])} {len(chosen)} or fewer"
                )
            utterances += chosen
    return utterances


def _tasks(language: str) -> tuple[str, ...]:
    return ("transcribe",) if language == "en" else ("transcribe", "translate")


def manifest_rows(utt: Utterance, duration: float) -> list[dict]:
    return [
        {
            "id": f"{utt.id}.{task}",
            "audio": utt.audio_path,
            "duration": round(duration, 3),
            "language": utt.language,
            "task": task,
            "text": utt.text,
            "english": utt.english,
            "voice": utt.voice,
            "seed": utt.seed,
            "family": utt.family,
        }
        for task in _tasks(utt.language)
    ]


def _versions() -> dict:
    def installed(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:  # the text-side packages are not needed to synthesize a saved plan
            return None

    packages = {pkg: installed(pkg) for pkg in ("soxr", "soundfile", "num2words", "babel", "faker")}
    return {**versions(), "libsndfile": sf.__libsndfile_version__, **packages}


def _prepare_out_dir(out: Path, config: BuildConfig, resume: bool, force: bool) -> bool:
    """Decide what to do with an existing directory; returns True if its saved plan can be reused."""
    record = out / "build.json"
    if not out.exists() or not any(out.iterdir()):
        return False
    if record.exists():
        previous = json.loads(record.read_text())["config"]
        if previous == config.to_json():
            return (out / "plan.jsonl").exists()
        if resume:
            return False
    if not force:
        raise CtxpruneError(
            f"{out} is not empty and was not built with this config; pass --resume to reuse its audio "
            "or --force to start over"
        )
    shutil.rmtree(out)
    return False


def _synthesize_one(args: tuple[Utterance, str]) -> tuple[str, float]:
    utt, root = args
    return utt.id, synthesize_to(utt, Path(root))


def check_voices(utterances: list[Utterance]) -> None:
    """Before any work: every voice the plan uses is installed (one-line error naming the package)."""
    for family, language, voice in sorted({(u.family, u.language, u.voice) for u in utterances}):
        try:
            check_voice(family, language, voice)
        except CtxpruneError as e:
            hint = "" if family == "espeak" else "; `--preset espeak` still builds (espeak-ng voices only)"
            raise CtxpruneError(f"{e}{hint}") from None


def build(
    out: Path,
    config: BuildConfig,
    workers: int = 1,
    resume: bool = False,
    force: bool = False,
    plan_only: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Plan (or reuse the saved plan), synthesize what is missing, write manifests; returns the record.
    With `plan_only`, stop after the plan: another machine can then synthesize it without the texts."""
    if workers < 1:
        raise CtxpruneError("--workers must be at least 1")
    reuse_plan = _prepare_out_dir(out, config, resume, force)
    out.mkdir(parents=True, exist_ok=True)
    if reuse_plan:
        utterances = [Utterance(**json.loads(line)) for line in (out / "plan.jsonl").read_text().splitlines()]
    else:
        utterances = plan(config)
        lines = "".join(json.dumps(asdict(u), ensure_ascii=False) + "\n" for u in utterances)
        write_bytes_atomic(out / "plan.jsonl", lines.encode())
    previous = json.loads((out / "build.json").read_text()) if reuse_plan else {}
    record = {
        "config": config.to_json(),
        "versions": _versions(),
        "catalogs": previous.get("catalogs") or catalogs_digest(["de", "fr", "es", "it"]),
        "complete": False,
        "synthesis_runs": previous.get("synthesis_runs", []),
    }
    write_json_atomic(out / "build.json", record)
    if plan_only:
        return record

    check_voices(utterances)
    pending = [u for u in utterances if not (out / u.audio_path).exists()]
    durations: dict[str, float] = {}
    start = time.perf_counter()
    if on_progress:
        on_progress(len(utterances) - len(pending), len(utterances))
    jobs = [(u, str(out)) for u in pending]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, (uid, duration) in enumerate(pool.imap_unordered(_synthesize_one, jobs, chunksize=8), 1):
            durations[uid] = duration
            if on_progress:
                on_progress(len(utterances) - len(pending) + i, len(utterances))
    wall = time.perf_counter() - start
    synthesized = sum(durations.values())
    for u in utterances:
        if u.id not in durations:
            durations[u.id] = sf.info(str(out / u.audio_path)).duration

    for split in SPLITS:
        rows = [r for u in utterances if u.split == split for r in manifest_rows(u, durations[u.id])]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_bytes_atomic(out / f"{split}.jsonl", text.encode())
    record["complete"] = True
    record["synthesis_runs"].append(
        {
            "utterances": len(pending),
            "audio_seconds": round(synthesized, 1),
            "wall_seconds": round(wall, 2),
            "workers": workers,
            "realtime_per_core": round(synthesized / wall / workers, 1) if pending and wall > 0 else None,
        }
    )
    write_json_atomic(out / "build.json", record)
    return record
