"""Peak memory of decoding a decompression bomb: a small OGG/Opus file of hours of silence.

Run it by hand (pytest does not collect it)::

    python -m tests.bench_decode_bomb --hours 4

It builds the file with PyAV (one encoded 20 ms silent packet, muxed over and over: a 4 h file is
about 4 MB and takes seconds to build), then decodes it in a fresh process with
``scaivoice.engine._voicenotes.codecs.decode_audio`` as the transcription endpoint does (with the engine's
default ``[voice_notes] max_audio_s`` cap) and reports that process's peak resident memory, next
to a process that only imports the modules and reads the file. ``--ignore-header`` measures the
cap applied while decoding, as for a file whose header understates its length.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

import av
import av.audio.stream
import numpy as np

_CHILD = """
import resource, sys, time
from scaivoice.engine import _codecs
from scaivoice.engine import AudioDecodeError
from scaivoice.engine._voicenotes.codecs import decode_audio
from scaivoice.engine._host.config import VoiceNotesConfig
if sys.argv[3] == "ignore-header":  # as if the header lied: only the decoding cap refuses
    _codecs._DECLARED_SLACK_S = float("inf")
data = open(sys.argv[1], "rb").read()
started = time.perf_counter()
outcome = "imported only"
if sys.argv[2] == "decode":
    try:
        pcm = decode_audio(data, max_duration_s=VoiceNotesConfig().max_audio_s)
        outcome = f"decoded {len(pcm) / 32000:.0f} s of audio"
    except AudioDecodeError as exc:
        outcome = f"refused: {exc}"
print(f"{outcome} in {time.perf_counter() - started:.2f} s")
"""


def silent_ogg_opus(seconds: float) -> bytes:
    """An OGG/Opus file of ``seconds`` of silence, built from one encoded packet."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        assert isinstance(stream, av.audio.stream.AudioStream)
        stream.bit_rate = 6000
        frame_size = stream.codec_context.frame_size or 960
        packets = []
        for index in range(10):  # the encoder's first packets differ; take a settled one
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, frame_size), dtype="<i2"), format="s16", layout="mono"
            )
            frame.sample_rate = 48000
            frame.pts = index * frame_size
            packets += stream.encode(frame)
        template = bytes(packets[-1])
        for index in range(int(seconds * 48000 / frame_size)):
            packet = av.Packet(template)
            packet.stream = stream
            packet.time_base = Fraction(1, 48000)
            packet.pts = packet.dts = index * frame_size
            packet.duration = frame_size
            container.mux(packet)
    return out.getvalue()


def peak_rss_mib(path: str, mode: str, header: str = "trust-header") -> tuple[float, str]:
    """Run the child in a fresh process; its peak resident memory in MiB and what it printed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, path, mode, header],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        raise RuntimeError("run the import-only child first: ru_maxrss of children is a maximum")
    return peak / 1024, result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument(
        "--ignore-header",
        action="store_true",
        help="skip the check of the duration the header declares (as if it lied)",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    data = silent_ogg_opus(args.hours * 3600)
    print(
        f"{args.hours:g} h of silence as OGG/Opus: {len(data) / 1e6:.1f} MB "
        f"(built in {time.perf_counter() - started:.1f} s)"
    )
    with tempfile.NamedTemporaryFile(suffix=".ogg", delete=False) as file:
        file.write(data)
    try:
        base, _ = peak_rss_mib(file.name, "import")
        header = "ignore-header" if args.ignore_header else "trust-header"
        peak, outcome = peak_rss_mib(file.name, "decode", header)
    finally:
        os.unlink(file.name)
    print(f"import + read the file: peak RSS {base:.0f} MiB")
    print(f"decode_audio: peak RSS {peak:.0f} MiB ({outcome})")


if __name__ == "__main__":
    main()
