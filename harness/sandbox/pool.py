"""Zygotes: small trusted interpreters that fork one supervisor per attempt, kept in a pool."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import tempfile
import threading

from . import isolation
from .interpreter import child_command, scrubbed_environment
from .results import SandboxError


class Zygote:
    """One child interpreter running ``child/zygote.py``; it never runs untrusted code."""

    def __init__(self) -> None:
        shared_flags = isolation.current().zygote_unshare_flags
        self.channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                child_command("zygote", str(theirs.fileno()), str(shared_flags)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                env=scrubbed_environment(tempfile.gettempdir()),
                start_new_session=True,
            )
        finally:
            theirs.close()

    def start_attempt(self, payload_fd: int, output_fd: int, result_fd: int) -> int:
        """Hand the zygote one attempt's fds; returns the supervisor's pid."""
        socket.send_fds(self.channel, [b"job"], [payload_fd, output_fd, result_fd])
        reply = self.channel.recv(8, socket.MSG_WAITALL)
        if len(reply) != 8:
            raise ConnectionError("the sandbox zygote exited")
        return int.from_bytes(reply, "little")

    def close(self) -> None:
        self.channel.close()  # the zygote sees end-of-file and exits
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class ZygotePool:
    """Idle zygotes, one per concurrently running attempt at most; replaced when they die."""

    def __init__(self) -> None:
        self._idle: list[Zygote] = []
        self._lock = threading.Lock()

    def start_attempt(self, payload_fd: int, output_fd: int, result_fd: int) -> int:
        with self._lock:
            zygote = self._idle.pop() if self._idle else None
        for _ in range(2):  # an idle zygote may have died (a program can kill it when no uid drop)
            zygote = zygote or Zygote()
            try:
                pid = zygote.start_attempt(payload_fd, output_fd, result_fd)
            except OSError:
                zygote.close()
                zygote = None
                continue
            with self._lock:
                self._idle.append(zygote)
            return pid
        raise SandboxError("could not start the sandbox zygote")

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for zygote in idle:
            zygote.close()

    def forget_after_fork(self) -> None:
        """In a forked copy of the harness: the zygotes (and maybe the lock) belong to the parent."""
        for zygote in self._idle:
            zygote.channel.close()  # our copy of the socket only
        self._idle = []
        self._lock = threading.Lock()


ZYGOTES = ZygotePool()
atexit.register(lambda: ZYGOTES.close())  # the pool in use at exit (tests may swap it)
os.register_at_fork(after_in_child=lambda: ZYGOTES.forget_after_fork())
