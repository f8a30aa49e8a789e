"""The ``engine.grpc`` section: where workers listen, frame sizes, deadlines, retries."""

from __future__ import annotations

from pydantic import Field, model_validator

from fedopt.fields import Section

MIB = 1 << 20
FRAME_HEADER_MAX = 64 * 1024  # room for the first frame's table (keys, shapes) above a chunk


class GrpcConfig(Section):
    """gRPC data plane settings (used with ``engine.transport: grpc``).

    Every payload is one client-streaming call; its tensors' raw bytes travel in chunks
    of at most ``chunk_bytes`` (Flower's ``Array``/``ArrayChunk`` idea), always below
    ``max_message_bytes``, the message cap set explicitly on every server and channel.
    ``chunk_bytes: 0`` sends each payload as one frame: a payload larger than the cap
    is then refused with an error naming both sizes.
    """

    host: str | None = Field(
        None, description="address to listen on and advertise (default: the Ray node's IP)"
    )
    ports: str | None = Field(
        None,
        pattern=r"^[0-9]{1,5}-[0-9]{1,5}$",
        description="port range 'lo-hi' the workers' servers bind in (default: ephemeral)",
    )
    chunk_bytes: int = Field(
        MIB, ge=0, le=1 << 30, description="largest tensor chunk per frame; 0: no chunking"
    )
    max_message_bytes: int = Field(
        4 * MIB,
        ge=1024,
        le=(1 << 31) - 1,
        description="gRPC send/receive message cap (set on every server and channel)",
    )
    deadline_s: float = Field(
        60.0, gt=0, description="deadline of one send (and of reaching a peer at start-up)"
    )
    retries: int = Field(3, ge=0, le=100, description="resends after an UNAVAILABLE error")
    workers: int = Field(4, ge=1, le=256, description="server threads per worker")

    @model_validator(mode="after")
    def _fits(self) -> GrpcConfig:
        if self.chunk_bytes and self.chunk_bytes + FRAME_HEADER_MAX > self.max_message_bytes:
            raise ValueError(
                f"engine.grpc: chunk_bytes={self.chunk_bytes} plus the frame header allowance "
                f"({FRAME_HEADER_MAX}) exceeds max_message_bytes={self.max_message_bytes}; "
                f"lower chunk_bytes or raise max_message_bytes"
            )
        if self.ports is not None:
            lo, hi = (int(p) for p in self.ports.split("-"))
            if not 1 <= lo <= hi <= 65535:
                raise ValueError(
                    f"engine.grpc.ports: {self.ports!r} is not a range 'lo-hi' with "
                    "1 <= lo <= hi <= 65535"
                )
        return self

    def port_range(self) -> range | None:
        """The ports to try in order, or None for an ephemeral port."""
        if self.ports is None:
            return None
        lo, hi = (int(p) for p in self.ports.split("-"))
        return range(lo, hi + 1)
