"""The sampler's decode cache: each step writes its token's keys/values in place.

transformers' DynamicCache appends a decode step's keys/values with torch.cat, which copies the
whole cache of every layer at every step: T steps copy O(T^2) positions, and each copy briefly
holds the old and the new cache at once. `in_place(cache, room)` swaps each full-attention
layer of a filled DynamicCache for a `BufferedLayer`: the keys/values live in buffers with room
to grow (doubling, up to `room` more positions) and the layer's `keys` / `values` are views of
the filled part, so a step writes one position and attention reads the same numbers as before.
Rows can still be dropped (`batch_select_indices`, rollout's compaction). Only used for
decoding (rollout._decode); the training forward's prefix cache is read-only (rollout._PrefixCache).

>>> import torch
>>> from transformers import DynamicCache
>>> cache = DynamicCache()
>>> _ = cache.update(torch.zeros(2, 1, 3, 4), torch.zeros(2, 1, 3, 4), 0)     # a 3-token prompt
>>> cache = in_place(cache, room=8)
>>> _ = cache.update(torch.ones(2, 1, 1, 4), torch.ones(2, 1, 1, 4), 0)       # one decode step
>>> cache.get_seq_length(), cache.layers[0].keys[:, 0, :, 0].tolist()
(4, [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
"""
import torch
from transformers.cache_utils import DynamicLayer


class BufferedLayer(DynamicLayer):
    """A DynamicLayer whose keys/values [R, kv, L, d] are views of larger buffers."""

    @classmethod
    def of(cls, layer: DynamicLayer, room: int) -> "BufferedLayer":
        """The same filled layer, able to take `room` more positions without a full copy."""
        new = cls()
        new.__dict__.update(layer.__dict__)
        new._len, new._limit = layer.keys.shape[-2], layer.keys.shape[-2] + room
        new._k, new._v = layer.keys, layer.values                # capacity = length, for now
        return new

    def _view(self):
        self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]

    def _reserve(self, need: int) -> None:
        """Capacity for `need` positions: double it (at most the limit, at least `need`)."""
        cap = self._k.shape[-2]
        if need <= cap:
            return
        cap = max(need, min(2 * cap, self._limit))

        def grown(buf):
            out = buf.new_empty(*buf.shape[:2], cap, buf.shape[-1])
            out[:, :, :self._len] = buf[:, :, :self._len]
            return out
        self._k, self._v = grown(self._k), grown(self._v)

    def update(self, key_states, value_states, *args, **kwargs):
        t = key_states.shape[-2]
        self._reserve(self._len + t)
        self._k[:, :, self._len:self._len + t] = key_states       # [R, kv, t, d], in place
        self._v[:, :, self._len:self._len + t] = value_states
        self._len += t
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._view()


def in_place(cache, room: int):
    """`cache` (a filled DynamicCache) with every plain DynamicLayer made a BufferedLayer."""
    cache.layers = [BufferedLayer.of(layer, room) if type(layer) is DynamicLayer
                    and layer.is_initialized else layer for layer in cache.layers]
    return cache
