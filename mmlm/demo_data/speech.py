"""The demo's speech: stdlib docstring sentences spoken by eSpeak NG through the shared library the
espeakng-loader wheel bundles (GPL-3 voices).

    speech       500 short sentences
    speech-text  500 more, with their transcripts
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from ..errors import MmlmError
from ..progress import Progress
from .common import SEED, write_jsonl

N_UTTERANCES = 500  # per speech dataset
_VOICES = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-029"]
_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+f1", "+f2", "+f3", "+f4"]


class Espeak:
    """Minimal ctypes binding of libespeak-ng (from the espeakng-loader wheel): text -> int16 PCM."""

    _instance = None

    def __init__(self):
        import ctypes

        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # AUDIO_OUTPUT_SYNCHRONOUS = 2: samples come back through the callback
        self.sample_rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sample_rate <= 0:
            raise MmlmError("eSpeak NG failed to initialise (espeakng-loader data missing?)")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav, n, events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(collect)  # keep a reference: the library holds a pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    @classmethod
    def get(cls) -> "Espeak":
        if cls._instance is None:  # espeak_Initialize must run once per process
            cls._instance = cls()
        return cls._instance

    def say(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise MmlmError(f"eSpeak NG has no voice {voice!r}")
        lib.espeak_SetParameter(1, rate, 0)  # espeakRATE, words per minute
        lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH, 0..100
        self._chunks = []
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, 1, None, None)  # 1 = espeakCHARS_UTF8
        lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def build_speech(out: Path, sentences: list[str], manifest: bool, on_progress: Progress, stage: str) -> None:
    """One WAV per sentence in a random voice, rate and pitch; with `manifest`, under wav/ with their
    transcripts in manifest.jsonl (speech-text)."""
    import soundfile as sf

    tts = Espeak.get()
    rng = random.Random(SEED + 3 + manifest)
    rows = []
    folder = out / "wav" if manifest else out
    folder.mkdir(exist_ok=True)
    for i, text in enumerate(sentences):
        voice = rng.choice(_VOICES) + rng.choice(_VARIANTS)
        pcm = tts.say(text, voice, rate=rng.randint(140, 200), pitch=rng.randint(30, 70))
        if pcm.size == 0:
            raise MmlmError(f"eSpeak NG produced no audio for {text!r}")
        name = f"utt_{i:04d}.wav"
        sf.write(folder / name, pcm, tts.sample_rate, subtype="PCM_16")
        rows.append({"audio": f"wav/{name}", "text": text})
        if i % 25 == 0:
            on_progress(stage, i, len(sentences), 0)
    if manifest:
        write_jsonl(out / "manifest.jsonl", rows)
    on_progress(stage, len(sentences), len(sentences), 0)
