"""`LLMPolicy`: a Hugging Face causal LM that samples actions token-in-token-out, in batches.

Each conversation is a `Row`: its token ids so far and, optionally, the KV cache of a prefix of
them. `generate` continues a batch of rows by one action each. Rows of different lengths share a
forward pass: cached prefixes are left-padded inside the batched cache, new tokens are left-padded
inside the new block, and an attention mask with explicit position ids hides every pad, so each
row computes what it would compute alone.

Log-probs are recorded under the model's own distribution (temperature 1, no top-p), which is the
distribution training scores; temperature and top-p only shape which token is drawn.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.cache_utils import DynamicLayer

from trajalign.agents.chat import ChatFormat


def cache_argument(model: Any) -> str:
    """The forward() keyword for a KV cache: transformers 5.x renamed `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(output: Any) -> DynamicCache:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


class SamplingConfig(BaseModel):
    temperature: float = Field(1.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(96, gt=0, description="An action that reaches this length is cut there.")
    seed: int = 0


@dataclass
class KVCache:
    """Keys and values of a row's first `length` tokens, per layer, shaped [1, heads, length, dim]."""

    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2]


@dataclass
class Row:
    """One conversation being generated: all its token ids, and the cache of a prefix of them."""

    ids: list[int]
    cache: KVCache | None = None
    sample_key: str = ""  # seeds this row's sampling, so a row draws the same tokens in any batch


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    stopped: bool  # ended with the stop token (False: cut at max_new_tokens)
    cache: KVCache | None = field(default=None, repr=False)


class LLMPolicy:
    """A causal LM with its tokenizer's chat format, generating actions for batches of rows."""

    def __init__(self, model: Any, tokenizer: Any, sampling: SamplingConfig | None = None, reuse_cache: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.format = ChatFormat(tokenizer)
        self.sampling = sampling or SamplingConfig()
        self.reuse_cache = reuse_cache
        if len(self.format.stop_ids) != 1:
            raise ValueError(f"the stop token {self.format.stop_text!r} must be a single token id, got {self.format.stop_ids}")
        self.stop_id = self.format.stop_ids[0]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_id
        config = model.config
        self.max_context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)
        self.name = Path(getattr(config, "_name_or_path", "") or "llm").name or "llm"
        self._cache_kwarg = cache_argument(model)
        self._prefix_caches: dict[tuple[int, ...], KVCache] = {}

    @classmethod
    def from_pretrained(cls, path: str | Path, sampling: SamplingConfig | None = None, reuse_cache: bool = True,
                        dtype: torch.dtype = torch.float32, device: str = "cpu") -> "LLMPolicy":
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        from trajalign.agents.tiny import quiet_progress_bars

        with quiet_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        policy = cls(model, tokenizer, sampling, reuse_cache)
        policy.name = path.name
        return policy

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def prefix_cache(self, ids: list[int]) -> KVCache | None:
        """The KV cache of a prefix many conversations share (the system prompt), computed once.

        Returns None when cache reuse is off.
        """
        if not self.reuse_cache or not ids:
            return None
        key = tuple(ids)
        if key not in self._prefix_caches:
            if len(self._prefix_caches) >= 16:
                self._prefix_caches.pop(next(iter(self._prefix_caches)))
            output = self._forward(torch.tensor([ids], device=self.device), None, None, DynamicCache())
            self._prefix_caches[key] = KVCache([(layer.keys, layer.values) for layer in self._cache_of(output).layers])
        return self._prefix_caches[key]

    def fits(self, row: Row) -> bool:
        """Whether the row has room for one more action of at most `max_new_tokens`."""
        return len(row.ids) + self.sampling.max_new_tokens <= self.max_context

    @torch.no_grad()
    def generate(self, rows: list[Row]) -> list[Generation]:
        """Sample one action for each row (each row must `fit`)."""
        if not rows:
            return []
        device = self.device
        caches = [row.cache if self.reuse_cache and row.cache is not None else None for row in rows]
        past = [cache.length if cache else 0 for cache in caches]
        new = [row.ids[length:] for row, length in zip(rows, past)]
        if any(not ids for ids in new):
            raise ValueError("every row needs at least one token beyond its cached prefix")
        width_past, width_new = max(past), max(len(ids) for ids in new)
        batch = len(rows)

        input_ids = torch.full((batch, width_new), self.pad_id, dtype=torch.long)
        position_ids = torch.zeros((batch, width_new), dtype=torch.long)
        mask = torch.zeros((batch, width_past + width_new), dtype=torch.long)
        for i, (ids, length) in enumerate(zip(new, past)):
            input_ids[i, width_new - len(ids):] = torch.tensor(ids)
            position_ids[i, width_new - len(ids):] = torch.arange(length, length + len(ids))
            mask[i, width_past - length:width_past] = 1
            mask[i, width_past + width_new - len(ids):] = 1
        capacity = width_past + width_new + self.sampling.max_new_tokens
        cache = self._batched_cache(caches, width_past, capacity, device)
        output = self._forward(input_ids.to(device), mask.to(device), position_ids.to(device), cache)
        cache = self._cache_of(output)
        logits = output.logits[:, -1].float()
        next_position = torch.tensor([length + len(ids) for ids, length in zip(new, past)])

        generators = [self._generator(row, len(row.ids)) for row in rows]
        tokens: list[list[int]] = [[] for _ in rows]
        logprobs: list[list[float]] = [[] for _ in rows]
        done = [False] * batch
        for step in range(self.sampling.max_new_tokens):
            log_probs = torch.log_softmax(logits, dim=-1)
            chosen = torch.full((batch,), self.pad_id, dtype=torch.long)
            for i in range(batch):
                if done[i]:
                    continue
                token = self._choose(logits[i], generators[i])
                tokens[i].append(token)
                logprobs[i].append(float(log_probs[i, token]))
                chosen[i] = token
                done[i] = token == self.stop_id
            if all(done) or step == self.sampling.max_new_tokens - 1:
                break
            alive = torch.tensor([0 if d else 1 for d in done], dtype=torch.long)
            # A finished row feeds a masked pad: it keeps the batch rectangular and changes nothing.
            chosen = torch.where(alive.bool(), chosen, torch.full_like(chosen, self.pad_id))
            mask = torch.cat([mask, alive[:, None]], dim=1)
            output = self._forward(chosen[:, None].to(device), mask.to(device), next_position[:, None].to(device), cache)
            cache = self._cache_of(output)
            logits = output.logits[:, -1].float()
            next_position = next_position + alive

        generations = []
        for i in range(batch):
            row_cache = self._row_cache(cache, mask[i], i) if self.reuse_cache else None
            generations.append(Generation(tokens[i], logprobs[i], tokens[i][-1] == self.stop_id, row_cache))
        return generations

    def action_text(self, generation: Generation) -> str:
        ids = generation.token_ids[:-1] if generation.stopped else generation.token_ids
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @torch.no_grad()
    def token_logprobs(self, ids: list[int]) -> list[float]:
        """Log-prob of each token after the first, from one plain forward over the sequence."""
        input_ids = torch.tensor([ids], device=self.device)
        logits = self.model(input_ids=input_ids).logits[0, :-1].float()
        return torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, 1:, None])[:, 0].tolist()

    # ---- internals ------------------------------------------------------------------------------

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor | None,
                 cache: DynamicCache) -> Any:
        return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          logits_to_keep=1, **{self._cache_kwarg: cache})

    @staticmethod
    def _cache_of(output: Any) -> DynamicCache:
        return output_cache(output)

    def _choose(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        sampling = self.sampling
        if sampling.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > sampling.top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator))

    def _generator(self, row: Row, position: int) -> torch.Generator:
        key = f"{self.sampling.seed}/{row.sample_key}/{position}".encode()
        generator = torch.Generator()
        generator.manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1)
        return generator

    def _batched_cache(self, caches: list[KVCache | None], width: int, capacity: int, device: torch.device) -> DynamicCache:
        """A batch cache with room for `capacity` tokens, holding each row's prefix right-aligned in `width`."""
        cache = DynamicCache()
        if width == 0:
            cache.layers = [_BufferedLayer(capacity) for _ in range(self.model.config.get_text_config().num_hidden_layers)]
            return cache
        template = next(row_cache for row_cache in caches if row_cache is not None).layers
        layers = []
        for layer, (keys, values) in enumerate(template):
            batch_keys = keys.new_zeros((len(caches), keys.shape[1], capacity, keys.shape[3]), device=device)
            batch_values = values.new_zeros((len(caches), values.shape[1], capacity, values.shape[3]), device=device)
            for i, row_cache in enumerate(caches):
                if row_cache is not None:
                    k, v = row_cache.layers[layer]
                    batch_keys[i, :, width - k.shape[2]:width] = k[0]
                    batch_values[i, :, width - v.shape[2]:width] = v[0]
            layers.append(_BufferedLayer(capacity, batch_keys, batch_values, width))
        cache.layers = layers
        return cache

    @staticmethod
    def _row_cache(cache: DynamicCache, mask_row: torch.Tensor, index: int) -> KVCache:
        keep = mask_row.bool().nonzero()[:, 0]
        # The last sampled token was never fed to the model, so the cache ends one token short.
        return KVCache([(layer.keys[index:index + 1, :, keep].clone(), layer.values[index:index + 1, :, keep].clone())
                        for layer in cache.layers])


class _BufferedLayer(DynamicLayer):
    """A cache layer that writes into buffers allocated once, instead of concatenating every step.

    `keys` and `values` are views of the filled part, so the rest of transformers sees an ordinary
    dynamic layer; decoding no longer copies the whole cache for each new token.
    """

    def __init__(self, capacity: int, keys: torch.Tensor | None = None, values: torch.Tensor | None = None,
                 length: int = 0):
        super().__init__()
        self.capacity = capacity
        self._keys, self._values = keys, values
        if keys is not None:
            self.is_initialized, self.device = True, keys.device
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        start = self.keys.shape[2] if self._keys is not None else 0
        end = start + key_states.shape[2]
        if self._keys is None or end > self._keys.shape[2]:
            self._grow(key_states, value_states, start, max(end, self.capacity))
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, filled: int, capacity: int) -> None:
        shape = (key_states.shape[0], key_states.shape[1], capacity)
        keys = key_states.new_zeros((*shape, key_states.shape[3]))
        values = value_states.new_zeros((*shape, value_states.shape[3]))
        if self._keys is not None:
            keys[:, :, :filled], values[:, :, :filled] = self._keys[:, :, :filled], self._values[:, :, :filled]
        self._keys, self._values, self.capacity = keys, values, capacity
        self.is_initialized, self.device = True, keys.device
