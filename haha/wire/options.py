"""Mobility options (RFC 6275 6.2, RFC 3963 4.3, draft sections 4.2.1-4.2.3).

Options are frozen dataclasses. Padding (Pad1, PadN) is not represented: the encoder inserts it
to honour each option's alignment requirement ``xn+y`` (counted from the start of the Mobility
Header) and to round the header up to a multiple of 8 octets; the decoder skips it. Options the
codec does not know survive a round trip as :class:`UnknownOption`.

The Binding Cache Entry Information option is compound: on the wire it is followed by its
"# of MNPs" Mobile Network Prefix options, in the dataclass those prefixes are a field.
"""

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from .addresses import address_at, address_int, network_parts, packed
from .errors import BAD_LENGTH, BAD_VALUE, TRUNCATED, WireError
from .numbers import OPT_ALT_COA, OPT_AUTH, OPT_BRA, OPT_NONCE, OPT_PAD1, OPT_PADN
from .records import maker

# Sub-types of the IP Address option (draft 4.2.1).
IPADDR_HOME_AGENT = 3
IPADDR_HOME_ADDRESS = 4

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")
_II = struct.Struct("!II")
_BCE_TAIL = struct.Struct("!HHHBB")
_BCE_BODY = struct.Struct("!16s16sHHHBB")
#: A whole BCE Information option (draft 4.2.3): Type | Length 40 | body.
_BCE_OPTION = struct.Struct("!BB16s16sHHHBB")
#: A whole Mobile Network Prefix option (RFC 3963 4.3): Type | Length 18 | Reserved | Prefix
#: Length | Prefix.
_MNP_OPTION = struct.Struct("!BBBB16s")


_addr = address_at


def _expect(name, length, want):
    if length != want:
        raise WireError(BAD_LENGTH, f"{name} option length {length}, expected {want}")


#: prefix length + 16 octets -> IPv6Network (bounded; networks are immutable)
_NETWORKS: dict[bytes, IPv6Network] = {}


def _prefix(data, off):
    """The network whose prefix length is ``data[off]`` and address ``data[off + 1:off + 17]``
    (host bits cleared), from a small cache.

    Building an IPv6Network costs more than decoding the rest of a Binding Update; the prefixes
    a home agent sees (mobile network prefixes, home prefixes in HELLOs) repeat with every
    refresh, so a bounded cache keyed by those 17 octets pays for itself.
    """
    key = bytes(data[off : off + 17])
    net = _NETWORKS.get(key)
    if net is None:
        length = key[0]
        if length > 128:
            raise WireError(BAD_VALUE, f"prefix length {length} > 128")
        net = IPv6Network((key[1:], length), strict=False)
        if len(_NETWORKS) >= 4096:
            _NETWORKS.clear()
        _NETWORKS[key] = net
    return net


def _mnp_body(network):
    """Reserved 8 | Prefix Length 8 | Prefix 128 (RFC 3963 4.3)."""
    plen, net = network_parts(network)
    return bytes((0, plen)) + net


@dataclass(frozen=True, slots=True)
class BindingRefreshAdvice:
    """RFC 6275 6.2.4: refresh interval in units of 4 seconds. Alignment 2n."""

    interval: int

    def wire(self, profile):
        return ((2, 0, OPT_BRA, _H.pack(self.interval)),)


@dataclass(frozen=True, slots=True)
class AlternateCareOfAddress:
    """RFC 6275 6.2.5. Alignment 8n+6."""

    address: IPv6Address

    def wire(self, profile):
        return ((8, 6, OPT_ALT_COA, packed(self.address)),)


@dataclass(frozen=True, slots=True)
class NonceIndices:
    """RFC 6275 6.2.6. Alignment 2n."""

    home_nonce_index: int
    care_of_nonce_index: int

    def wire(self, profile):
        return ((2, 0, OPT_NONCE, _HH.pack(self.home_nonce_index, self.care_of_nonce_index)),)


@dataclass(frozen=True, slots=True)
class BindingAuthorizationData:
    """RFC 6275 6.2.7: the authenticator (96 bits in RFC 6275). Alignment 8n+2."""

    authenticator: bytes

    def wire(self, profile):
        return ((8, 2, OPT_AUTH, bytes(self.authenticator)),)


@dataclass(frozen=True, slots=True)
class MobileNetworkPrefix:
    """RFC 3963 4.3: Reserved 8 | Prefix Length 8 | Prefix 128. Alignment 8n+4."""

    prefix: IPv6Network

    def wire(self, profile):
        return ((8, 4, profile.opt_mnp, _mnp_body(self.prefix)),)


@dataclass(frozen=True, slots=True)
class IpAddress:
    """Draft 4.2.1 (FMIPv6's IP Address option): Sub-Type 8 | Prefix Length 8 | Address 128.

    Sub-type 3 names a home agent (HASR), 4 a home address (BIR). Alignment 8n+4.
    """

    subtype: int
    address: IPv6Address
    prefix_length: int = 128

    def wire(self, profile):
        if not 0 <= self.prefix_length <= 128:
            raise ValueError(f"prefix length {self.prefix_length} is not 0-128")
        return (
            (8, 4, profile.opt_ip_address,
             bytes((self.subtype, self.prefix_length)) + packed(self.address)),
        )


@dataclass(frozen=True, slots=True)
class BceInfo:
    """Draft 4.2.3, Binding Cache Entry Information; alignment 8n+2.

    Home Address 128 | Care-of Address 128 | Flags 16 (the BU flags word) | Sequence 16 |
    Lifetime 16 (remaining, units of 4 s) | # of MNPs 8 | Reserved 8, followed on the wire by
    "# of MNPs" Mobile Network Prefix options, which are ``prefixes`` here.
    """

    home_address: IPv6Address
    care_of_address: IPv6Address
    flags: int
    sequence: int
    lifetime: int
    prefixes: tuple = ()

    def wire(self, profile):
        body = _BCE_BODY.pack(
            packed(self.home_address), packed(self.care_of_address),
            self.flags, self.sequence, self.lifetime, len(self.prefixes), 0,
        )
        first = (8, 2, profile.opt_bce_info, body)
        if not self.prefixes:
            return (first,)
        mnp = profile.opt_mnp
        return [first] + [(8, 4, mnp, _mnp_body(p)) for p in self.prefixes]


_DIGEST = struct.Struct("!IQ")


@dataclass(frozen=True, slots=True)
class BindingDigest:
    """haha's anti-entropy extension, carried in HELLO (docs/protocol.md, "Binding digests"):
    Count 32 | Digest 64, alignment 8n+2 (so Digest is 8-aligned).

    ``count`` is the number of bindings the sender holds as primary and ``digest`` the XOR of
    :func:`haha.core.cache.bce_digest` over them: a peer whose copies of the sender's bindings
    give another pair is missing or holding stale state, and asks for a bulk answer.
    """

    count: int
    digest: int

    def wire(self, profile):
        return ((8, 2, profile.opt_binding_digest, _DIGEST.pack(self.count, self.digest)),)


@dataclass(frozen=True, slots=True)
class EspState:
    """haha's extension for address take-over (docs/protocol.md): the ESP state of the SA
    pair between the sender (at its address ``local``) and the mobile node ``home_address``.
    Home Address 128 | Local Address 128 | Outbound High-Water 32 | Inbound Top 32; alignment
    8n+6. ``outbound`` is above every sequence number the sender will use on its outbound SA
    before it sends a new one (the margin is the sender's); ``inbound`` is the highest
    sequence number it accepted from the node."""

    home_address: IPv6Address
    local: IPv6Address
    outbound: int
    inbound: int

    def wire(self, profile):
        return ((8, 6, profile.opt_esp_state,
                 packed(self.home_address) + packed(self.local)
                 + _II.pack(self.outbound, self.inbound)),)


@dataclass(frozen=True, slots=True)
class UnknownOption:
    """An option this codec does not interpret, kept verbatim. No alignment is assumed."""

    type: int
    data: bytes

    def wire(self, profile):
        t = self.type
        if t in (OPT_PAD1, OPT_PADN, OPT_BRA, OPT_ALT_COA, OPT_NONCE, OPT_AUTH) or t in (
            profile.opt_mnp, profile.opt_ip_address, profile.opt_bce_info,
            profile.opt_esp_state, profile.opt_binding_digest,
        ):
            # It would not come back as an UnknownOption: use the option's own class.
            raise ValueError(f"option type {t} is not unknown under profile {profile.name}")
        return ((1, 0, t, bytes(self.data)),)


#: Pad1 (RFC 6275 6.2.1) for one octet, PadN (6.2.2) with n-2 zero octets of data for more.
_PADS = (b"", b"\x00") + tuple(bytes((OPT_PADN, n - 2)) + bytes(n - 2) for n in range(2, 8))


def encode_options(options, offset, profile):
    """Encode ``options`` starting at Mobility Header offset ``offset``.

    Returns the option bytes with alignment padding and the trailing padding that makes
    ``offset + len(result)`` a multiple of 8.
    """
    out = []
    pos = offset
    try:
        for opt in options:
            for x, y, otype, body in opt.wire(profile):
                pad = (y - pos) % x
                if pad:
                    out.append(_PADS[pad])
                    pos += pad
                n = len(body)
                out.append(bytes((otype, n)))
                out.append(body)
                pos += 2 + n
    except (struct.error, ValueError, AttributeError, TypeError) as e:
        raise WireError(BAD_VALUE, f"cannot encode option: {e}") from None
    pad = -pos % 8
    if pad:
        out.append(_PADS[pad])
    return b"".join(out)


class _Slow(Exception):
    """Raised inside a fast path for anything it does not handle: the general code takes over
    from the start, so results and errors are exactly the general code's."""


def encode_entries(entries, options, offset, profile):
    """``encode_options((*entries, *options), offset, profile)``: the option area of a Binding
    Information Update, whose ``entries`` are BCE Information options (draft 4.2.3, 8n+2) each
    followed by its Mobile Network Prefix options (RFC 3963 4.3, 8n+4).

    Each such option is packed whole with one ``struct`` call; any entry that is not a plain
    :class:`BceInfo` of IPv6 addresses and networks, or a field that does not pack, sends the
    whole area to :func:`encode_options`, which encodes it or raises its usual error.
    """
    out = []
    pos = offset
    bce_type = profile.opt_bce_info
    mnp_type = profile.opt_mnp
    pack_bce = _BCE_OPTION.pack
    pack_mnp = _MNP_OPTION.pack
    as_int = address_int
    try:
        for e in entries:
            if type(e) is not BceInfo:
                raise _Slow
            home, coa, prefixes = e.home_address, e.care_of_address, e.prefixes
            if type(home) is not IPv6Address or type(coa) is not IPv6Address:
                raise _Slow
            pad = (2 - pos) & 7
            if pad:
                out.append(_PADS[pad])
            out.append(pack_bce(bce_type, 40, as_int(home).to_bytes(16, "big"),
                                as_int(coa).to_bytes(16, "big"), e.flags, e.sequence,
                                e.lifetime, len(prefixes), 0))
            pos += pad + 42
            for net in prefixes:
                if type(net) is not IPv6Network:
                    raise _Slow
                pad = (4 - pos) & 7
                if pad:
                    out.append(_PADS[pad])
                out.append(pack_mnp(mnp_type, 18, 0, net.prefixlen,
                                    as_int(net.network_address).to_bytes(16, "big")))
                pos += pad + 20
    except (_Slow, struct.error, ValueError, AttributeError, TypeError):
        return encode_options((*entries, *options), offset, profile)
    if options:
        out.append(encode_options(options, pos, profile))
    else:
        out.append(_PADS[-pos & 7])  # to a multiple of 8 octets, as encode_options ends
    return b"".join(out)


_MK_BRA = maker(BindingRefreshAdvice)
_MK_ALTCOA = maker(AlternateCareOfAddress)
_MK_NONCE = maker(NonceIndices)
_MK_AUTH = maker(BindingAuthorizationData)
_MK_MNP = maker(MobileNetworkPrefix)
_MK_IPADDR = maker(IpAddress)
_MK_BCE = maker(BceInfo)
_MK_UNKNOWN = maker(UnknownOption)
_MK_DIGEST = maker(BindingDigest)
_MK_ESP_STATE = maker(EspState)


def _dec_bra(data, off, n, profile):
    if n != 2:
        _expect("Binding Refresh Advice", n, 2)
    return _MK_BRA(_H.unpack_from(data, off)[0])


def _dec_altcoa(data, off, n, profile):
    if n != 16:
        _expect("Alternate Care-of Address", n, 16)
    return _MK_ALTCOA(_addr(data, off))


def _dec_nonce(data, off, n, profile):
    if n != 4:
        _expect("Nonce Indices", n, 4)
    return _MK_NONCE(*_HH.unpack_from(data, off))


def _dec_auth(data, off, n, profile):
    return _MK_AUTH(bytes(data[off : off + n]))


def _dec_mnp(data, off, n, profile):
    if n != 18:
        _expect("Mobile Network Prefix", n, 18)
    return _MK_MNP(_prefix(data, off + 1))


def _dec_ipaddr(data, off, n, profile):
    if n != 18:
        _expect("IP Address", n, 18)
    plen = data[off + 1]
    if plen > 128:
        raise WireError(BAD_VALUE, f"IP Address option prefix length {plen} > 128")
    return _MK_IPADDR(data[off], _addr(data, off + 2), plen)


def _dec_digest(data, off, n, profile):
    if n != 12:
        _expect("Binding Digest", n, 12)
    return _MK_DIGEST(*_DIGEST.unpack_from(data, off))


def _dec_esp_state(data, off, n, profile):
    if n != 40:
        _expect("ESP State", n, 40)
    return _MK_ESP_STATE(_addr(data, off), _addr(data, off + 16),
                         *_II.unpack_from(data, off + 32))


def _bce(data, off, prefixes):
    flags, seq, life, _count, _ = _BCE_TAIL.unpack_from(data, off + 32)
    return _MK_BCE(_addr(data, off), _addr(data, off + 16), flags, seq, life, prefixes)


def _dec_bce(data, off, n, profile):
    # Only reached through a custom table: decode_options reads BCE options itself, with the
    # "# of MNPs" Mobile Network Prefix options that follow them.
    _expect("Binding Cache Entry Information", n, 40)
    return _bce(data, off, ())


_FIXED_DECODERS = {
    OPT_BRA: _dec_bra,
    OPT_ALT_COA: _dec_altcoa,
    OPT_NONCE: _dec_nonce,
    OPT_AUTH: _dec_auth,
}


def decoders_for(profile):
    """The option-type -> decoder table of ``profile`` (built once per profile)."""
    table = dict(_FIXED_DECODERS)
    table[profile.opt_mnp] = _dec_mnp
    table[profile.opt_ip_address] = _dec_ipaddr
    table[profile.opt_bce_info] = _dec_bce
    table[profile.opt_binding_digest] = _dec_digest
    table[profile.opt_esp_state] = _dec_esp_state
    return table


def decode_options(data, pos, end, table, profile):
    """Decode the options in ``data[pos:end]`` (``pos`` is their Mobility Header offset).

    Padding is skipped, lengths are checked, unknown types kept. A BCE Information option takes
    the Mobile Network Prefix options that follow it, as many as its "# of MNPs" says.
    """
    opts = []
    owed = 0  # MNP options still owed to the BCE Information option being read
    prefixes = None
    bce_at = None  # where that option's body starts
    bce_type = profile.opt_bce_info
    mnp_type = profile.opt_mnp
    while pos < end:
        t = data[pos]
        if t == OPT_PAD1:
            pos += 1
            continue
        if pos + 2 > end:
            raise WireError(TRUNCATED, f"option type {t} at offset {pos} has no length")
        n = data[pos + 1]
        nxt = pos + 2 + n
        if nxt > end:
            raise WireError(TRUNCATED, f"option type {t} at offset {pos} overruns the header")
        if t == OPT_PADN:
            pos = nxt
            continue
        if owed:
            # The "# of MNPs" Mobile Network Prefix options that complete a BCE Information option.
            if t != mnp_type:
                raise WireError(BAD_VALUE, f"BCE Information option lacks {owed} MNP option(s)")
            if n != 18:
                _expect("Mobile Network Prefix", n, 18)
            prefixes.append(_prefix(data, pos + 3))
            owed -= 1
            if not owed:
                opts.append(_bce(data, bce_at, tuple(prefixes)))
        elif t == bce_type:
            if n != 40:
                _expect("Binding Cache Entry Information", n, 40)
            owed = data[pos + 40]  # "# of MNPs": body offset 38
            if owed:
                bce_at = pos + 2
                prefixes = []
            else:
                opts.append(_bce(data, pos + 2, ()))
        else:
            dec = table.get(t)
            opts.append(
                dec(data, pos + 2, n, profile) if dec else _MK_UNKNOWN(t, bytes(data[pos + 2 : nxt]))
            )
        pos = nxt
    if owed:
        raise WireError(BAD_VALUE, f"BCE Information option lacks {owed} MNP option(s)")
    return tuple(opts)


def decode_entries(data, pos, end, table, profile):
    """``(entries, others)``: the options of ``data[pos:end]`` as :func:`decode_options` decodes
    them, BCE Information options (with their prefixes) apart from the rest, in order: a Binding
    Information Update's option area.

    The usual area -- padding, BCE Information options and the Mobile Network Prefix options
    each one owes -- is read here directly; at anything else (another option, a length that is
    not the option's, an option that overruns, a missing prefix) the whole area goes to
    :func:`decode_options`, which decodes it or raises its usual error.
    """
    entries = []
    bce_type = profile.opt_bce_info
    mnp_type = profile.opt_mnp
    unpack_tail = _BCE_TAIL.unpack_from
    start = pos
    try:
        while pos < end:
            t = data[pos]
            if t == bce_type:
                nxt = pos + 42
                if nxt > end or data[pos + 1] != 40:
                    raise _Slow
                flags, seq, life, owed, _ = unpack_tail(data, pos + 34)
                home, coa = _addr(data, pos + 2), _addr(data, pos + 18)
                pos = nxt
                prefixes = []
                while owed:
                    if pos >= end:
                        raise _Slow
                    t = data[pos]
                    if t == OPT_PAD1:
                        pos += 1
                        continue
                    if pos + 2 > end:
                        raise _Slow
                    nxt = pos + 2 + data[pos + 1]
                    if nxt > end:
                        raise _Slow
                    if t == OPT_PADN:
                        pos = nxt
                        continue
                    if t != mnp_type or nxt - pos != 20:
                        raise _Slow
                    prefixes.append(_prefix(data, pos + 3))
                    owed -= 1
                    pos = nxt
                entries.append(_MK_BCE(home, coa, flags, seq, life, tuple(prefixes)))
            elif t == OPT_PADN:
                if pos + 2 > end:
                    raise _Slow
                nxt = pos + 2 + data[pos + 1]
                if nxt > end:
                    raise _Slow
                pos = nxt
            elif t == OPT_PAD1:
                pos += 1
            else:
                raise _Slow
    except _Slow:
        entries, others = [], []
        for o in decode_options(data, start, end, table, profile):
            (entries if type(o) is BceInfo else others).append(o)
        return tuple(entries), tuple(others)
    return tuple(entries), ()
