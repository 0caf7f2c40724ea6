"""Text generation with the ``lm`` head: greedy or temperature / top-p sampling, KV cache.

>>> import torch
>>> from cl.model import ByteTokenizer, MoETransformer
>>> _ = torch.manual_seed(0)
>>> model = MoETransformer()
>>> prompt = ByteTokenizer().batch(["hi", "hello"], pad_side="left")
>>> a = generate(model, prompt, max_new_tokens=4, temperature=0.8, top_p=0.9, seed=7)
>>> b = generate(model, prompt, max_new_tokens=4, temperature=0.8, top_p=0.9, seed=7)
>>> torch.equal(a, b), a.shape[0], a.shape[1] <= prompt.shape[1] + 4
(True, 2, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from cl.model._checks import check_tokens

if TYPE_CHECKING:
    from cl.model.transformer import MoETransformer


MIN_TEMPERATURE = 1e-3


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Pick one token per row.

    Args:
        logits: ``(B, V)`` next-token logits.
        temperature: 0 (or below ``MIN_TEMPERATURE``) = greedy (argmax); otherwise logits are
            divided by it.
        top_p: Keep the smallest set of tokens whose probability reaches ``top_p``
            (the most likely token always stays).
        generator: Random source for sampling.

    Returns:
        ``(B,)`` int64 token ids.
    """
    if temperature < MIN_TEMPERATURE:  # dividing by less would overflow: it is greedy anyway
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)  # (B, V)
        drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # mass before this token already enough
        drop[:, 0] = False  # the most likely token stays, even for a top_p that is 0 in float32 (1e-46)
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


@torch.no_grad()
def generate(
    model: MoETransformer,
    tokens: torch.Tensor,
    *,
    max_new_tokens: int,
    adapter_ids: torch.Tensor | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue each prompt by up to ``max_new_tokens`` bytes.

    A row that emits EOS is finished: it gets PAD from then on, and generation stops
    early once every row is finished. The config's ``sampling_exclusions`` (PAD, BOS, CLS, ...)
    are never sampled. It is :func:`generate_steps` run to the end, so a stream and a whole
    generation of the same request are the same tokens.

    Args:
        model: The model (switched to eval mode for the call, then restored).
        tokens: ``(B, T)`` left-padded prompts (``ByteTokenizer.batch(..., pad_side="left")``).
        max_new_tokens: At most this many tokens are added.
        adapter_ids: ``(B,)`` adapter slot per row (``-1`` = base), or ``None``.
        temperature: 0 for greedy decoding, > 0 to sample.
        top_p: Nucleus sampling threshold in ``(0, 1]``.
        seed: Seed a fresh ``torch.Generator`` (same seed, same output).
        generator: Use this generator instead (do not combine with ``seed``).
        stop_at_eos: Finish rows at EOS.
        use_cache: Decode with a KV cache (else recompute the whole sequence every step;
            same result, slower).

    Returns:
        ``(B, T + n)`` prompts followed by the ``n <= max_new_tokens`` generated tokens.

    Raises:
        ValueError: Bad arguments, right-padded prompts, or ``T + max_new_tokens`` over
            ``max_seq_len``.
    """
    tokens, generator = _checked(model, tokens, max_new_tokens, temperature, top_p, seed, generator)
    steps = list(
        _steps(model, tokens, max_new_tokens, adapter_ids, temperature, top_p, generator, stop_at_eos, use_cache)
    )
    return torch.cat((tokens, torch.stack(steps, dim=1)), dim=1)  # (B, T + n)


def generate_steps(
    model: MoETransformer,
    tokens: torch.Tensor,
    *,
    max_new_tokens: int,
    adapter_ids: torch.Tensor | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_at_eos: bool = True,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield each step's new tokens as soon as they are sampled, so a server can stream them.

    Takes :func:`generate`'s arguments and checks them at the call (a bad request fails before
    the first step); the steps are the columns :func:`generate` appends to the prompts. The
    model is in eval mode until the iterator is exhausted or closed.

    Example:
        >>> from cl.model import ByteTokenizer, MoETransformer
        >>> _ = torch.manual_seed(0)
        >>> model, prompt = MoETransformer(), ByteTokenizer().batch(["hi"], pad_side="left")
        >>> steps = list(generate_steps(model, prompt, max_new_tokens=5, stop_at_eos=False))
        >>> [tuple(s.shape) for s in steps] == [(1,)] * 5
        True
        >>> whole = generate(model, prompt, max_new_tokens=5, stop_at_eos=False)
        >>> torch.equal(torch.stack(steps, 1), whole[:, prompt.shape[1] :])
        True

    Yields:
        ``(B,)`` int64 token ids per step, PAD for rows that finished earlier; at most
        ``max_new_tokens`` steps, fewer once every row is finished.

    Raises:
        ValueError: As :func:`generate`.
    """
    tokens, generator = _checked(model, tokens, max_new_tokens, temperature, top_p, seed, generator)
    return _steps(model, tokens, max_new_tokens, adapter_ids, temperature, top_p, generator, stop_at_eos, use_cache)


def _checked(
    model: MoETransformer,
    tokens: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Generator | None]:
    """The prompts on the model's device and the random source, after checking every argument."""
    cfg = model.config
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if seed is not None and generator is not None:
        raise ValueError("give seed= or generator=, not both")
    tokens = check_tokens(tokens, cfg.vocab_size, cfg.pad_id).to(model.device)  # (B, T)
    T = tokens.shape[1]
    if bool((tokens[:, -1] == cfg.pad_id).any()):
        raise ValueError(
            "every prompt must end in a real token: left-pad prompts "
            "(ByteTokenizer.batch(..., pad_side='left')) and give no empty prompt"
        )
    if T + max_new_tokens > cfg.max_seq_len:
        raise ValueError(
            f"prompt length {T} + max_new_tokens {max_new_tokens} exceeds max_seq_len="
            f"{cfg.max_seq_len}; shorten the prompt or ask for fewer tokens"
        )
    if seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    return tokens, generator


@torch.no_grad()  # on a generator function torch enters it around every step, not across the yields
def _steps(
    model: MoETransformer,
    tokens: torch.Tensor,
    max_new_tokens: int,
    adapter_ids: torch.Tensor | None,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    stop_at_eos: bool,
    use_cache: bool,
) -> Iterator[torch.Tensor]:
    """The decoding loop of checked arguments (see :func:`generate_steps`)."""
    cfg = model.config
    B, T = tokens.shape
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(B, T + max_new_tokens) if use_cache else None
        seq = tokens
        logits = model(tokens=seq, adapter_ids=adapter_ids, head="lm", cache=cache)[:, -1]  # (B, V)
        done = torch.zeros(B, dtype=torch.bool, device=seq.device)
        never = list(cfg.sampling_exclusions)
        eos = torch.tensor(cfg.eos_ids, dtype=torch.long, device=seq.device)
        for step in range(max_new_tokens):
            logits[:, never] = float("-inf")
            nxt = sample_next(logits, temperature, top_p, generator)  # (B,)
            nxt = nxt.masked_fill(done, cfg.pad_id)
            yield nxt
            if stop_at_eos:
                done |= torch.isin(nxt, eos)
                if bool(done.all()):
                    break
            if step == max_new_tokens - 1:
                break
            if cache is not None:
                logits = model(tokens=nxt[:, None], adapter_ids=adapter_ids, head="lm", cache=cache)[:, -1]
            else:
                seq = torch.cat((seq, nxt[:, None]), dim=1)  # (B, T + step + 1)
                logits = model(tokens=seq, adapter_ids=adapter_ids, head="lm")[:, -1]
    finally:
        model.train(was_training)
