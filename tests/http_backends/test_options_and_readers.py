"""Registration, the shared option table, and the sans-IO audio readers (no server needed)."""

from __future__ import annotations

import importlib.metadata
import struct
from typing import Any

import pytest

from scaivoice.backends.openai_llm import OpenAILlmBackend, OpenAILlmOptions
from scaivoice.backends.openai_stt import OpenAISttBackend, OpenAISttOptions, wav_bytes
from scaivoice.backends.openai_tts import (
    OpenAITtsBackend,
    OpenAITtsOptions,
    PcmReader,
    SniffingReader,
    WavReader,
)
from scaivoice.engine import BackendProtocolError, ConfigError, PluginHost

LLM = {"base_url": "http://127.0.0.1:8080/v1", "api_key": "sk-llm", "model": "smollm2"}
STT = {"base_url": "http://127.0.0.1:8000/v1", "model": "whisper-1", "language": "en"}
TTS = {"base_url": "http://127.0.0.1:8880/v1", "voice": "heart", "voices": ["heart"]}


def test_the_entry_point_names_the_module() -> None:
    points = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="scaivoice")}
    assert points["builtin-http-backends"] == "scaivoice.backends.http"


def test_one_openai_backend_of_each_kind_is_declared() -> None:
    host = PluginHost()
    failures = host.load_entry_points(include_third_party=False, strict=False)
    assert not [f for f in failures if f.entry_point == "builtin-http-backends"]
    stt = host.backend_specs("stt")["openai"]
    llm = host.backend_specs("llm")["openai"]
    tts = host.backend_specs("tts")["openai"]
    assert not stt.capabilities.interim_results and not stt.capabilities.streaming  # type: ignore[union-attr]
    assert llm.capabilities.streaming and llm.capabilities.tools  # type: ignore[union-attr]
    assert tts.capabilities.speed and tts.capabilities.instructions  # type: ignore[union-attr]
    assert tts.capabilities.sample_rates == (24000,)  # type: ignore[union-attr]
    assert not tts.capabilities.cfg_value and not tts.capabilities.warmup_trim  # type: ignore[union-attr]


def test_each_kind_is_built_from_its_own_table() -> None:
    host = PluginHost()
    host.load_entry_points(include_third_party=False, strict=False)
    llm = host.backend_specs("llm")["openai"].factory({**LLM, "max_tokens": 64})
    stt = host.backend_specs("stt")["openai"].factory({**STT, "max_retries": 1})
    tts = host.backend_specs("tts")["openai"].factory({**TTS, "read_timeout_s": 10.0})
    assert isinstance(llm, OpenAILlmBackend) and llm.name == "openai"
    assert isinstance(stt, OpenAISttBackend) and isinstance(tts, OpenAITtsBackend)
    assert llm.options.model == "smollm2" and llm.options.max_tokens == 64
    assert llm.options.api_key == "sk-llm" and stt.options.api_key is None
    assert stt.options.model == "whisper-1" and stt.options.max_retries == 1
    assert tts.options.voices == ["heart"] and tts.options.read_timeout_s == 10.0
    assert {llm.options.connect_timeout_s, stt.options.connect_timeout_s} == {5.0}


@pytest.mark.parametrize(
    ("options_class", "values", "match"),
    [
        (OpenAILlmOptions, {"model": "m"}, "base_url"),
        (OpenAILlmOptions, {"base_url": "http://h/v1"}, "model"),
        (OpenAILlmOptions, {"base_url": "ftp://h/v1", "model": "m"}, "http"),
        (OpenAILlmOptions, {"base_url": "not a url", "model": "m"}, "base_url"),
        (OpenAISttOptions, {"base_url": "http://h/v1", "voice": "heart"}, "voice"),
        (OpenAITtsOptions, {"base_url": "http://h/v1", "speeed": 1}, "speeed"),
        (OpenAITtsOptions, {"base_url": "http://h/v1", "sample_rate": 4000}, ">= 8000"),
        (OpenAITtsOptions, {"base_url": "http://h/v1", "api_key": "a\nb"}, "header"),
        (OpenAISttOptions, {"base_url": "http://h/v1", "max_retries": -1}, ">= 0"),
    ],
)
def test_bad_options_are_config_errors(
    options_class: type[OpenAILlmOptions], values: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        options_class.from_mapping(values, backend="openai")
    assert "openai (" in str(caught.value)  # names the backend and the kind


# --------------------------------------------------------------------------- readers


def _collect(reader: PcmReader | WavReader | SniffingReader, *pieces: bytes) -> bytes:
    out = b"".join(c.pcm for piece in pieces for c in reader.feed(piece))
    reader.finish()
    return out


def test_pcm_is_cut_into_chunks_and_odd_bytes_wait() -> None:
    reader = PcmReader(24000, 20, backend="openai")  # 20 ms = 960 bytes
    chunks = list(reader.feed(b"\1" * 2001))
    assert [len(c.pcm) for c in chunks] == [960, 960, 80]
    assert [len(c.pcm) for c in reader.feed(b"\1")] == [2]  # the odd byte completed a sample
    reader.finish()
    list(reader.feed(b"\1"))
    with pytest.raises(BackendProtocolError, match="half"):
        reader.finish()


def _header(data_size: int, extra: bytes = b"") -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    return (
        b"RIFF\0\0\0\0WAVE"
        + extra
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


def test_a_wav_is_read_by_its_header_even_byte_by_byte() -> None:
    pcm = bytes(range(200))
    wav = wav_bytes(pcm, 16000)  # what the STT backend uploads: the stdlib's WAV
    assert _collect(WavReader(100, backend="openai"), wav) == pcm
    reader = WavReader(100, backend="openai")
    assert _collect(reader, *[wav[i : i + 1] for i in range(len(wav))]) == pcm
    chunks = list(WavReader(100, backend="openai").feed(wav))
    assert {c.sample_rate for c in chunks} == {16000}


def test_a_wav_data_size_is_respected_unless_unknown() -> None:
    list_chunk = b"LIST" + struct.pack("<I", 4) + b"INFO"
    wav = _header(4, extra=b"JUNK" + struct.pack("<I", 3) + b"abc\0") + b"\1\2\3\4" + list_chunk
    assert _collect(WavReader(100, backend="openai"), wav) == b"\1\2\3\4"
    streamed = _header(0xFFFFFFFF) + b"\1\2" * 10
    assert _collect(WavReader(100, backend="openai"), streamed) == b"\1\2" * 10


def test_a_generic_content_type_is_sniffed() -> None:
    wav = wav_bytes(b"\5\6" * 10, 16000)
    assert _collect(SniffingReader(24000, 100, backend="openai"), wav[:2], wav[2:]) == b"\5\6" * 10
    assert _collect(SniffingReader(24000, 100, backend="openai"), b"\1\2\3\4") == b"\1\2\3\4"
    assert _collect(SniffingReader(24000, 100, backend="openai"), b"\1\2") == b""
