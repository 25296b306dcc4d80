"""Drain3 mining for `logbert prepare`, in this process or in a second one beside the rest of the work.

Drain3 is sequential (each line may change the templates the next one is matched against), so it cannot be split
across lines; but reading, header splitting, timestamps and sessions need none of its state. With a second
process, Drain3 mines batch k+1 while this process groups batch k into sessions: on two cores the stage then runs
at the pace of the slower half instead of the sum of both.

Both miners take batches of contents and hand back, batch by batch in the same order, the Drain3 cluster id of
every line; `finish` returns the final templates. The second process gets the Drain settings as plain JSON and
answers in JSON: no Drain3 object, no pickle or jsonpickle, crosses the process boundary.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path

from .reading import PrepareError
from .templates import DrainSettings, build_template_miner

# Lines per message to the mining process: large enough that the pipe costs ~0.1 us a line, small enough that
# the two halves start overlapping at once.
MINING_BATCH_LINES = 1024
# Below this much input the second process costs more to start (~0.3 s) than it saves.
BACKGROUND_MINING_MIN_BYTES = 8 << 20

Templates = list[tuple[int, str, int]]  # (cluster id, template text, lines mined into it), by cluster id


class InlineMiner:
    """Mines each batch at once, in this process."""

    def __init__(self, settings: DrainSettings):
        self.miner = build_template_miner(settings)
        self._ready: deque[list[int]] = deque()

    def submit(self, contents: list[str]) -> None:
        self._ready.append(mine(self.miner, contents))

    def receive(self) -> list[int]:
        return self._ready.popleft()

    def finish(self) -> Templates:
        return final_templates(self.miner)

    def close(self) -> None:
        pass


class BackgroundMiner:
    """Mines in a second Python process: `submit` hands a batch over, `receive` waits for the oldest batch's ids.

    The process is a plain `python -c` child reading batches on its standard input and answering in JSON lines,
    not a multiprocessing one: "spawn" would run the caller's main script again in the child (a script without an
    `if __name__ == "__main__"` guard would prepare twice), and "fork" would copy whatever threads the caller has.
    A batch is its byte length on one line, then the contents joined by newlines (a content never holds one: lines
    are split at them); JSON would cost this process 0.2 us a line. Pipes hold 64 KB: at most two batches are ever
    in flight, and the child's replies (ids) stay far below that.
    """

    def __init__(self, settings: DrainSettings):
        build_template_miner(settings)  # a bad mask regex fails here, as one line, not in the other process
        package_root = str(Path(__file__).resolve().parents[2])
        environment = {**os.environ,
                       "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
        self._stderr = tempfile.TemporaryFile()  # a crash's last line goes into our one-line error
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from logbert.prepare.mining import serve; serve()",
             json.dumps(settings.to_json())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=environment)

    def submit(self, contents: list[str]) -> None:
        try:
            payload = "\n".join(contents).encode()
            self._process.stdin.write(b"%d\n" % len(payload) + payload)
            self._process.stdin.flush()
        except OSError:  # the process is gone: its own message, when it left one, says why
            self.receive()
            raise PrepareError("the Drain3 mining process stopped") from None

    def receive(self) -> list:
        line = self._process.stdout.readline()
        if not line:
            code = self._process.wait()
            self._stderr.seek(0)
            last = (self._stderr.read().decode(errors="replace").strip().splitlines() or [""])[-1]
            raise PrepareError(f"the Drain3 mining process stopped (exit code {code}){': ' + last if last else ''}")
        reply = json.loads(line)
        if isinstance(reply, dict):  # the mining process's own error, as one line
            raise PrepareError(f"Drain3 mining failed: {reply['error']}")
        return reply

    def finish(self) -> Templates:
        self._process.stdin.close()  # end of input: the process answers with the final templates
        templates = self.receive()
        self._process.wait()
        return [tuple(template) for template in templates]

    def close(self) -> None:
        """Stops the process if it is still running (an error in the middle of the input)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        for stream in (self._process.stdin, self._process.stdout, self._stderr):
            with contextlib.suppress(OSError):  # unsent input to a process that is gone
                stream.close()


def start_miner(settings: DrainSettings, inputs: list[str], background: bool | None) -> InlineMiner | BackgroundMiner:
    """A background miner when asked (True), or by default (None) when two cores and at least
    BACKGROUND_MINING_MIN_BYTES of input files (not stdin) make it worth starting; else an inline one."""
    if background is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        size = sum(os.path.getsize(path) for path in inputs if path != "-" and os.path.isfile(path))
        background = cores >= 2 and size >= BACKGROUND_MINING_MIN_BYTES
    return BackgroundMiner(settings) if background else InlineMiner(settings)


def mine(miner, contents: list[str]) -> list[int]:
    # TemplateMiner.add_log_message is mask + Drain.add_log_message + a result dict holding the template text (a
    # join per line, unused here): calling the two parts directly saves that.
    add, mask = miner.drain.add_log_message, miner.masker.mask
    return [add(mask(content))[0].cluster_id for content in contents]


def final_templates(miner) -> Templates:
    return [(cluster.cluster_id, cluster.get_template(), cluster.size)
            for cluster in sorted(miner.drain.clusters, key=lambda cluster: cluster.cluster_id)]


def serve() -> None:
    """The mining process (see BackgroundMiner): batches of contents in, JSON lines of cluster ids out; at the end
    of the input, the final templates."""
    def reply(value) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    try:
        miner = build_template_miner(DrainSettings.from_json(json.loads(sys.argv[1])))
        source = sys.stdin.buffer
        while header := source.readline():
            reply(mine(miner, source.read(int(header)).decode().split("\n")))
        reply(final_templates(miner))
    except Exception as error:  # noqa: BLE001 - reported to the main process, which raises it as one line
        reply({"error": f"{type(error).__name__}: {error}"})
