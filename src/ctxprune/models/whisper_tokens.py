"""Whisper's special tokens: the prompt (`<|sot|><|lang|><|task|>[<|notimestamps|>]`), timestamps and
suppression lists."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import GenerationConfig

from ctxprune.errors import CtxpruneError

TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class WhisperTokens:
    sot: int
    eot: int
    no_timestamps: int
    lang_to_id: dict[str, int]  # "de" -> id of <|de|>
    task_to_id: dict[str, int]
    suppress: tuple[int, ...]
    begin_suppress: tuple[int, ...]

    @classmethod
    def from_generation_config(cls, gen: GenerationConfig) -> WhisperTokens:
        if not getattr(gen, "lang_to_id", None):
            raise CtxpruneError(
                "this Whisper model is English-only or lacks a generation config with lang_to_id"
            )
        return cls(
            sot=gen.decoder_start_token_id,
            eot=gen.eos_token_id,
            no_timestamps=gen.no_timestamps_token_id,
            lang_to_id={k.strip("<|>"): v for k, v in gen.lang_to_id.items()},
            task_to_id=dict(gen.task_to_id),
            suppress=tuple(gen.suppress_tokens or ()),
            begin_suppress=tuple(gen.begin_suppress_tokens or ()),
        )

    @property
    def timestamp_begin(self) -> int:
        """`<|0.00|>`: every id from here on is a timestamp, in steps of 0.02 s."""
        return self.no_timestamps + 1

    @property
    def no_speech(self) -> int:
        """`<|nospeech|>` (`<|nocaptions|>`), whose probability after `<|startoftranscript|>` says "silence"
        (HF takes it as the id before `<|notimestamps|>`)."""
        return self.no_timestamps - 1

    @property
    def start_of_previous(self) -> int:
        """`<|startofprev|>`: what precedes the previous window's text when decoding is conditioned on it."""
        return self.no_timestamps - 2

    @property
    def languages(self) -> list[str]:
        return list(self.lang_to_id)

    def check_language(self, language: str) -> str:
        if language not in self.lang_to_id:
            raise CtxpruneError(
                f"unknown language code {language!r}; "
                f"use 'auto' or one of: {', '.join(sorted(self.lang_to_id))}"
            )
        return language

    @staticmethod
    def check_task(task: str) -> str:
        if task not in TASKS:
            raise CtxpruneError(f"unknown task {task!r}; use one of: {', '.join(TASKS)}")
        return task

    def until_end(self, row: list[int]) -> list[int]:
        """A generated row up to (not including) its first end-of-text."""
        return row[: row.index(self.eot)] if self.eot in row else row

    def prompt(self, language: str, task: str, timestamps: bool = False) -> list[int]:
        """`<|sot|><|lang|><|task|>`, then `<|notimestamps|>` unless timestamps are decoded."""
        head = [self.sot, self.lang_to_id[language], self.task_to_id[task]]
        return head if timestamps else [*head, self.no_timestamps]
