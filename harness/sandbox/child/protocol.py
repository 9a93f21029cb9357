"""The narrow channel between the checker and the candidate: framed ``marshal`` messages that
carry plain data only.

Plain data is ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``,
``Ellipsis`` and lists, tuples, sets, frozensets and dicts of them, by *exact* type. Such values
have no methods a program wrote, so comparing them in the checker runs only the interpreter's
own code. ``marshal`` refuses instances of user classes (even subclasses of ``int`` or
``str``); it does accept anything with the buffer protocol and code objects, so the checker
validates every value it receives (``is_plain``) and the candidate converts what it can
(``to_plain``: numpy arrays and scalars through ``tolist()``).

A frame is ``MAGIC + length (4 bytes, little-endian) + marshal payload``. Bytes that are not
part of a frame are skipped: a program that writes junk into its own channel only garbles what
it says itself, and cannot make the checker misread anything else. Only cheap built-in modules.
"""

from marshal import dumps
from os import read, write

MAGIC = b"\x00\xffsandbox-frame\xff\x00"
HEADER_BYTES = len(MAGIC) + 4
SCALARS = frozenset({type(None), bool, int, float, complex, str, bytes, type(Ellipsis)})
CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
MAX_CONVERSION_DEPTH = 200  # deeper results are not plain data (marshal itself stops at 2000)
READ_CHUNK = 1 << 20


class ChannelError(Exception):
    """The other side broke the protocol."""


class Overflow(ChannelError):
    """A frame (or the junk before one) exceeded the reader's limit."""


class NotPlain(Exception):
    """A value that cannot cross the channel; ``description`` says what it was ("a Foo object")."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def frame(message: tuple) -> bytes:
    """Raises ValueError if ``message`` holds something marshal refuses."""
    payload = dumps(message)
    return MAGIC + len(payload).to_bytes(4, "little") + payload


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[write(fd, view) :]


class FrameReader:
    """Extracts frame payloads from a byte stream; ``fill()`` returns more bytes, b"" at the end."""

    def __init__(self, fill, limit: int) -> None:
        self.fill = fill
        self.limit = limit
        self.buffer = bytearray()
        self.skipped = 0

    def next_payload(self) -> bytes | None:
        """The next frame's payload, or None at end of stream. Raises Overflow past the limit."""
        while True:
            payload = self._take_frame()
            if payload is not None:
                return payload
            if self.skipped > self.limit:
                raise Overflow(f"more than {self.limit} bytes outside frames")
            chunk = self.fill()
            if not chunk:
                return None
            self.buffer += chunk

    def _take_frame(self) -> bytes | None:
        buffer = self.buffer
        start = buffer.find(MAGIC)
        if start < 0:  # junk; keep a tail that may be the start of MAGIC
            junk = max(0, len(buffer) - len(MAGIC) + 1)
            self.skipped += junk
            del buffer[:junk]
            return None
        self.skipped += start
        del buffer[:start]
        if len(buffer) < HEADER_BYTES:
            return None
        size = int.from_bytes(buffer[len(MAGIC) : HEADER_BYTES], "little")
        if size > self.limit:
            raise Overflow(f"a message of {size} bytes (the limit is {self.limit})")
        if len(buffer) < HEADER_BYTES + size:
            return None
        payload = bytes(buffer[HEADER_BYTES : HEADER_BYTES + size])
        del buffer[: HEADER_BYTES + size]
        return payload


def blocking_reader(fd: int, limit: int) -> FrameReader:
    return FrameReader(lambda: read(fd, READ_CHUNK), limit)


def is_plain(value: object) -> bool:
    """Exact plain types all the way down, and no cycles (shared sub-values are fine).
    Iterative: marshal nests up to 2000 deep, deeper than Python's recursion limit."""
    if type(value) in SCALARS:
        return True
    on_path: set[int] = set()
    finished: set[int] = set()
    stack: list[tuple[object, bool]] = [(value, False)]
    while stack:
        item, leaving = stack.pop()
        kind = type(item)
        if kind in SCALARS:
            continue
        if kind not in CONTAINERS:
            return False
        key = id(item)  # every item stays alive (referenced from value) while we walk
        if leaving:
            on_path.discard(key)
            finished.add(key)
            continue
        if key in on_path:
            return False
        if key in finished:
            continue
        on_path.add(key)
        stack.append((item, True))
        if isinstance(item, dict):
            stack.extend((part, False) for pair in item.items() for part in pair)
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend((child, False) for child in item)
    return True


def _rebuild(value: object, depth: int) -> object:
    """A container of exact type rebuilt from plain copies of its items."""
    if isinstance(value, dict):
        return {to_plain(k, depth): to_plain(v, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(item, depth) for item in value]
    if isinstance(value, tuple):
        return tuple(to_plain(item, depth) for item in value)
    if isinstance(value, frozenset):
        return frozenset(to_plain(item, depth) for item in value)
    if isinstance(value, set):
        return {to_plain(item, depth) for item in value}
    raise NotPlain(f"a {type(value).__name__} object")


def to_plain(value: object, depth: int = 0) -> object:
    """Candidate side: ``value`` itself when plain, else a plain copy; raises NotPlain.

    Containers are rebuilt by exact type; anything with ``tolist()`` (numpy arrays and scalars)
    is converted through it, so a numpy grid or ``numpy.int64`` answer is judged by its values.
    """
    kind = type(value)
    if kind in SCALARS:
        return value
    if depth == 0 and is_plain(value):
        return value
    if depth > MAX_CONVERSION_DEPTH:
        raise NotPlain(f"a {kind.__name__} nested more than {MAX_CONVERSION_DEPTH} deep")
    if kind in CONTAINERS:
        return _rebuild(value, depth + 1)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return to_plain(tolist(), depth + 1)
    raise NotPlain(f"a {kind.__name__} object")
