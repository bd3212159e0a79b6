"""The coder driven lane by lane, for a model that resets its context at every window.

A fixed number of lanes each carry one segment at a time. Between two model steps a
lane either waits for the distribution of its next byte (given the bytes of its current
window) or is idle. After a model step the kernel feeds each waiting lane's byte to its
coder; a lane whose window closes starts the next window at once with the window-start
distribution (the model's prediction after BOS alone, the same for every window), so a
window's first byte never needs a model step. Idle lanes take the next segment from
the queue. The kernels then say, per lane, which token to feed the model at which slot.

So the model computes one position per coded byte (the position that predicts a byte
that then overflows is the only waste: one per window), batched across segments.

A kernel call advances one contiguous range of lanes, so a caller can split the lanes
into sets and code one set while the model computes the next step of another. The lane
I/O arrays (tokens and slots out, model results in) may be the caller's own, for
example NumPy views of pinned buffers that go to a GPU in one copy.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .api import CoderConfig, Windows, check_offsets, check_windows
from .constants import STATE_BITS
from .kernels import _FULL, PULL_BAD_ROW, _finish, _pull, _push

# Columns of the encoder's lane state.
E_SEG, E_POS, E_END, E_N, E_PHASE, E_LOW, E_RNG, E_CODE = range(8)
# Columns of the decoder's lane state.
D_SEG, D_POS, D_END, D_W, D_WEND, D_REM, D_N, D_PHASE, D_LOW, D_RNG, D_VPOS = range(11)


@njit(cache=True, nogil=True)
def encode_lanes_kernel(data, seg_off, order, queue, st, waiting, cum_in, freq_in, bos_cum, bos_freq,
                        window_bits, max_window_bytes, out_seg, out_code, out_count, out_ptr,
                        tok, slot, target, lo, hi):
    """Consume one model step for the waiting lanes in [lo, hi), refill idle ones, and say
    what the model must compute next. Returns the number of lanes in [lo, hi) now waiting."""
    g = np.int64(STATE_BITS - window_bits)
    n_seg = seg_off.shape[0] - 1
    n_wait = 0
    for b in range(lo, hi):
        start = st[b, E_SEG] < 0
        if not start and waiting[b]:
            fits, ph, lo, rn, co = _push(st[b, E_PHASE], st[b, E_LOW], st[b, E_RNG], st[b, E_CODE],
                                         np.int64(cum_in[b]), np.int64(freq_in[b]), g)
            if fits:
                st[b, E_PHASE], st[b, E_LOW], st[b, E_RNG], st[b, E_CODE] = ph, lo, rn, co
                st[b, E_N] += 1
                st[b, E_POS] += 1
            if not fits or st[b, E_POS] == st[b, E_END] or st[b, E_N] == max_window_bytes:
                k = out_ptr[0]
                out_seg[k], out_code[k], out_count[k] = st[b, E_SEG], _finish(st[b, E_PHASE], st[b, E_LOW], st[b, E_CODE], g), st[b, E_N]
                out_ptr[0] = k + 1
                start = True
        while start:
            if st[b, E_SEG] < 0 or st[b, E_POS] == st[b, E_END]:
                if queue[0] >= n_seg:
                    st[b, E_SEG] = -1
                    break
                s = order[queue[0]]
                queue[0] += 1
                st[b, E_SEG], st[b, E_POS], st[b, E_END] = s, seg_off[s], seg_off[s + 1]
                continue
            i = st[b, E_POS]
            byte = data[i]
            fits, ph, lo, rn, co = _push(1, np.int64(0), _FULL, np.int64(0),
                                         np.int64(bos_cum[byte]), np.int64(bos_freq[byte]), g)
            st[b, E_POS] = i + 1
            k = out_ptr[0]
            if not fits:  # escape: the raw byte as the window's code
                out_seg[k], out_code[k], out_count[k] = st[b, E_SEG], byte, 0
                out_ptr[0] = k + 1
                continue
            st[b, E_N], st[b, E_PHASE], st[b, E_LOW], st[b, E_RNG], st[b, E_CODE] = 1, ph, lo, rn, co
            if i + 1 == st[b, E_END] or max_window_bytes == 1:
                out_seg[k], out_code[k], out_count[k] = st[b, E_SEG], _finish(ph, lo, co, g), 1
                out_ptr[0] = k + 1
                continue
            start = False
        waiting[b] = st[b, E_SEG] >= 0
        if waiting[b]:
            i = st[b, E_POS]
            tok[b], slot[b], target[b] = data[i - 1], st[b, E_N], data[i]
            n_wait += 1
        else:
            tok[b], slot[b], target[b] = 0, 1, 0
    return n_wait


@njit(cache=True, nogil=True)
def decode_lanes_kernel(codes, counts, win_off, seg_off, order, queue, st, waiting, freq_in, bos_freq,
                        window_bits, max_window_bytes, out, bad_seg, tok, slot, lo, hi):
    """Decoder twin of encode_lanes_kernel: consume one model step (full frequency rows
    for the waiting lanes in [lo, hi)), refill idle ones, say what to compute next.
    Segments whose windows do not decode to exactly their length, or claim a window
    longer than max_window_bytes, are flagged in bad_seg: a damaged record must never
    make a slot the model's KV cache does not have (on a GPU that is a device-side
    assert that poisons the whole process)."""
    g = np.int64(STATE_BITS - window_bits)
    n_seg = seg_off.shape[0] - 1
    n_wait = 0
    for b in range(lo, hi):
        start = st[b, D_SEG] < 0
        if not start and waiting[b]:
            sym, ph, lo, rn = _pull(st[b, D_PHASE], st[b, D_LOW], st[b, D_RNG], st[b, D_VPOS], freq_in[b], g)
            if sym < 0:
                bad_seg[st[b, D_SEG]] = 1 if sym == PULL_BAD_ROW else 2
                st[b, D_SEG] = -1
            else:
                st[b, D_PHASE], st[b, D_LOW], st[b, D_RNG] = ph, lo, rn
                out[st[b, D_POS]] = sym
                st[b, D_POS] += 1
                st[b, D_N] += 1
                st[b, D_REM] -= 1
                if st[b, D_REM] == 0:
                    st[b, D_W] += 1
            start = st[b, D_SEG] < 0 or st[b, D_REM] == 0
        while start:
            if st[b, D_SEG] < 0:
                if queue[0] >= n_seg:
                    break
                s = order[queue[0]]
                queue[0] += 1
                st[b, D_SEG], st[b, D_POS], st[b, D_END] = s, seg_off[s], seg_off[s + 1]
                st[b, D_W], st[b, D_WEND] = win_off[s], win_off[s + 1]
                continue
            s, w, pos = st[b, D_SEG], st[b, D_W], st[b, D_POS]
            if w == st[b, D_WEND]:
                if pos != st[b, D_END]:
                    bad_seg[s] = 2
                st[b, D_SEG] = -1
                continue
            n = np.int64(counts[w])
            if n < 0 or n > max_window_bytes or pos + max(n, 1) > st[b, D_END] or (n == 0 and codes[w] > 255):
                bad_seg[s] = 2
                st[b, D_SEG] = -1
                continue
            if n == 0:  # escape window: the code is the raw byte
                out[pos] = codes[w]
                st[b, D_POS] = pos + 1
                st[b, D_W] = w + 1
                continue
            vpos = np.int64(codes[w]) << g
            sym, ph, lo, rn = _pull(1, np.int64(0), _FULL, vpos, bos_freq, g)
            if sym < 0:
                bad_seg[s] = 1 if sym == PULL_BAD_ROW else 2
                st[b, D_SEG] = -1
                continue
            out[pos] = sym
            st[b, D_POS] = pos + 1
            st[b, D_N], st[b, D_REM], st[b, D_PHASE], st[b, D_LOW], st[b, D_RNG], st[b, D_VPOS] = 1, n - 1, ph, lo, rn, vpos
            if n == 1:
                st[b, D_W] = w + 1
                continue
            start = False
        waiting[b] = st[b, D_SEG] >= 0
        if waiting[b]:
            tok[b], slot[b] = out[st[b, D_POS] - 1], st[b, D_N]
            n_wait += 1
        else:
            tok[b], slot[b] = 0, 1
    return n_wait


def longest_first(seg_off: np.ndarray) -> np.ndarray:
    """Segments in the order lanes take them: longest first (ties by index), so the
    long ones do not run alone at the end while the other lanes sit idle."""
    return np.argsort(-np.diff(seg_off), kind="stable").astype(np.int64)


def _bos_ints(bos_freq) -> tuple[np.ndarray, np.ndarray]:
    bos_freq = np.ascontiguousarray(bos_freq, dtype=np.int32)
    if bos_freq.shape != (256,) or bos_freq.min() < 1 or bos_freq.sum() != (1 << 16):
        raise ValueError("bos_freq must be one valid [256] frequency row")
    return (np.cumsum(bos_freq) - bos_freq).astype(np.int32), bos_freq


def _lane_io(name: str, a, lanes: int, dtype) -> np.ndarray:
    """A caller-supplied lane array, checked once: the kernels write into it in place."""
    if a is None:
        return np.zeros(lanes, dtype)
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.shape != (lanes,) or not a.flags.writeable:
        raise ValueError(f"{name}: expected a writeable {np.dtype(dtype).name} array of shape ({lanes},)")
    return a


def _lane_range(lo: int, hi: int | None, lanes: int) -> tuple[int, int]:
    hi = lanes if hi is None else hi
    if not 0 <= lo <= hi <= lanes:
        raise ValueError(f"lane range [{lo}, {hi}) is not inside [0, {lanes})")
    return lo, hi


class LaneEncoder:
    """Drives encode_lanes_kernel. Usage:

        enc = LaneEncoder(data, seg_off, lanes, bos_freq, config)
        while enc.waiting_count:
            cum, freq = model_ints(enc.tok, enc.slot, enc.target)   # one model step
            enc.advance(cum, freq)                                  # or advance(cum, freq, lo, hi)
        windows = enc.windows()

    tok, slot, target: optional int64 [lanes] arrays the kernel writes the next model
    inputs into (default: its own).
    """

    def __init__(self, data, seg_off, lanes: int, bos_freq, config: CoderConfig, tok=None, slot=None, target=None):
        self.data = np.ascontiguousarray(data, dtype=np.uint8)
        self.seg_off = check_offsets("seg_off", seg_off, self.data.shape[0])
        self.config = config
        self.lanes = lanes
        self.max_window = config.max_window_bytes or np.iinfo(np.int64).max
        self.bos_cum, self.bos_freq = _bos_ints(bos_freq)
        self.st = np.full((lanes, 8), -1, np.int64)
        self.waiting = np.zeros(lanes, np.bool_)
        self.order, self.queue = longest_first(self.seg_off), np.zeros(1, np.int64)
        n = self.data.shape[0]
        self.out_seg, self.out_code, self.out_count = np.empty(n, np.int64), np.empty(n, np.uint32), np.empty(n, np.int32)
        self.out_ptr = np.zeros(1, np.int64)
        self.tok, self.slot, self.target = (_lane_io(k, a, lanes, np.int64) for k, a in
                                            (("tok", tok), ("slot", slot), ("target", target)))
        self.steps = 0
        self.positions = 0  # lanes that waited on a model step, summed over steps
        self._run(np.zeros(lanes, np.int32), np.ones(lanes, np.int32), 0, lanes)
        self.waiting_count = int(np.count_nonzero(self.waiting))

    def _run(self, cum, freq, lo, hi) -> int:
        return encode_lanes_kernel(
            self.data, self.seg_off, self.order, self.queue, self.st, self.waiting, cum, freq, self.bos_cum, self.bos_freq,
            self.config.window_bits, self.max_window, self.out_seg, self.out_code, self.out_count, self.out_ptr,
            self.tok, self.slot, self.target, lo, hi,
        )

    def advance(self, cum: np.ndarray, freq: np.ndarray, lo: int = 0, hi: int | None = None) -> int:
        """Feed one model step to lanes [lo, hi): cum[b], freq[b] of lane b's `target` byte
        (arrays over all lanes). Returns how many lanes of the range wait now."""
        lo, hi = _lane_range(lo, hi, self.lanes)
        self.steps += 1
        self.positions += int(np.count_nonzero(self.waiting[lo:hi]))
        n = self._run(np.ascontiguousarray(cum, np.int32), np.ascontiguousarray(freq, np.int32), lo, hi)
        self.waiting_count = int(np.count_nonzero(self.waiting))
        return n

    def windows(self) -> Windows:
        if self.waiting_count or self.queue[0] < self.seg_off.shape[0] - 1:
            raise RuntimeError("windows() before every segment was coded")
        k = self.out_ptr[0]
        order = np.argsort(self.out_seg[:k], kind="stable")  # a segment's windows stay in order
        n_seg = self.seg_off.shape[0] - 1
        win_off = np.zeros(n_seg + 1, np.int64)
        np.cumsum(np.bincount(self.out_seg[:k], minlength=n_seg), out=win_off[1:])
        return Windows(self.out_code[:k][order].copy(), self.out_count[:k][order].copy(), win_off)


class LaneDecoder:
    """Drives decode_lanes_kernel; the model step must return full frequency rows.
    tok, slot: optional int64 [lanes] arrays for the next model inputs."""

    def __init__(self, windows: Windows, seg_off, lanes: int, bos_freq, config: CoderConfig, tok=None, slot=None):
        self.seg_off = check_offsets("seg_off", seg_off, int(np.asarray(seg_off)[-1]) if len(seg_off) else 0)
        self.win = check_windows(windows, self.seg_off.shape[0] - 1)
        self.config = config
        self.lanes = lanes
        self.max_window = config.max_window_bytes or np.iinfo(np.int64).max
        _, self.bos_freq = _bos_ints(bos_freq)
        self.st = np.full((lanes, 11), -1, np.int64)
        self.waiting = np.zeros(lanes, np.bool_)
        self.order, self.queue = longest_first(self.seg_off), np.zeros(1, np.int64)
        self.out = np.zeros(int(self.seg_off[-1]), np.uint8)
        self.bad_seg = np.zeros(self.seg_off.shape[0] - 1, np.int8)
        self.tok, self.slot = _lane_io("tok", tok, lanes, np.int64), _lane_io("slot", slot, lanes, np.int64)
        self.steps = 0
        self._run(np.ones((lanes, 256), np.int32), 0, lanes)
        self.waiting_count = int(np.count_nonzero(self.waiting))

    def _run(self, freq_rows, lo, hi) -> int:
        return decode_lanes_kernel(
            self.win.codes, self.win.counts, self.win.win_off, self.seg_off, self.order, self.queue, self.st, self.waiting,
            freq_rows, self.bos_freq, self.config.window_bits, self.max_window, self.out, self.bad_seg, self.tok, self.slot,
            lo, hi,
        )

    def advance(self, freq_rows: np.ndarray, lo: int = 0, hi: int | None = None) -> int:
        """Feed one model step to lanes [lo, hi): freq_rows[b] is the [256] frequency row of
        lane b's next byte (rows for all lanes). Returns how many lanes of the range wait now."""
        lo, hi = _lane_range(lo, hi, self.lanes)
        freq_rows = np.ascontiguousarray(freq_rows, np.int32)
        if freq_rows.shape != (self.lanes, 256):
            raise ValueError(f"freq_rows: expected shape ({self.lanes}, 256), got {freq_rows.shape}")
        self.steps += 1
        n = self._run(freq_rows, lo, hi)
        self.waiting_count = int(np.count_nonzero(self.waiting))
        return n
