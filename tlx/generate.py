r"""Autoregressive generation from a GPT: greedy or temperature / top-k sampling on a KV cache.

  python -m tlx.generate --workdir=runs/gpt_mini --prompt="The history of" \
      [--max_new_tokens=40 --temperature=0.8 --top_k=40 --seed=0 --checkpoint=latest]

`generate` is one jitted function: an init call shapes the key/value cache for
prompt + max_new_tokens positions, the prompt is run through it in one pass (prefill), then a
`lax.fori_loop` feeds back one token per step. temperature=0 is greedy decoding.
Prompts in a batch share one length (no left padding).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from tlx.errors import ConfigError, cli_boundary


def _sample(logits, rng, temperature: float, top_k: int):
    """[B, V] float32 logits -> [B] int32 token ids."""
    if temperature == 0.0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]  # [B, 1] the k-th largest
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(rng, logits, -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k"))
def generate(
    model: nn.Module,
    params,
    prompt: jnp.ndarray,
    rng: jnp.ndarray,
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int = 0,
) -> jnp.ndarray:
    """prompt [B, P] int32 -> [B, P + max_new_tokens]; `model` is a GptForCausalLM."""
    batch, prompt_len = prompt.shape
    total = prompt_len + max_new_tokens
    if total > model.config.max_position:
        raise ValueError(f"{total} positions exceed max_position={model.config.max_position}")
    cache = model.init(
        jax.random.PRNGKey(0),
        jnp.zeros((batch, total), jnp.int32),
        decode=True,
        method=model.logits,
    )["cache"]
    cache = jax.tree.map(jnp.zeros_like, cache)
    variables = {"params": params}

    def run(cache, ids):
        logits, mutated = model.apply(
            {**variables, "cache": cache}, ids, decode=True, method=model.logits, mutable=["cache"]
        )
        return logits[:, -1], mutated["cache"]  # [B, V] of the last fed position

    logits, cache = run(cache, prompt)
    out = jnp.concatenate([prompt, jnp.zeros((batch, max_new_tokens), jnp.int32)], 1)

    def body(i, carry):
        out, cache, logits = carry
        token = _sample(logits, jax.random.fold_in(rng, i), temperature, top_k)  # [B]
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, prompt_len + i))
        logits, cache = run(cache, token[:, None])
        return out, cache, logits

    out, _, _ = jax.lax.fori_loop(0, max_new_tokens, body, (out, cache, logits))
    return out


def generate_uncached(model, params, prompt, rng, *, max_new_tokens, temperature=0.0, top_k=0):
    """Reference decoding without a cache (for tests): every step re-runs the full causal
    forward pass over a fixed [B, P + N] buffer and reads the logits after the last token."""
    batch, prompt_len = prompt.shape
    out = jnp.concatenate([prompt, jnp.zeros((batch, max_new_tokens), jnp.int32)], 1)
    forward = jax.jit(lambda ids: model.apply({"params": params}, ids, method=model.logits))
    for i in range(max_new_tokens):
        logits = forward(out)[:, prompt_len + i - 1]
        token = _sample(logits, jax.random.fold_in(rng, i), temperature, top_k)
        out = out.at[:, prompt_len + i].set(token)
    return out


def check_flags(temperature: float, top_k: int, max_new_tokens: int, vocab_size: int) -> None:
    """Sampling settings that cannot work are a ConfigError naming the flag."""
    if not temperature >= 0.0:
        raise ConfigError(f"--temperature={temperature}: must be >= 0 (0 is greedy decoding)")
    if not 0 <= top_k <= vocab_size:
        raise ConfigError(
            f"--top_k={top_k}: must be in [0, {vocab_size}] (the vocabulary size; 0 = all)"
        )
    if max_new_tokens <= 0:
        raise ConfigError(f"--max_new_tokens={max_new_tokens}: must be positive")


def generate_run(workdir: str, prompt: str, *, max_new_tokens=40, temperature=0.0, top_k=0,
                 seed=0, checkpoint_name="latest") -> tuple[str, str]:  # fmt: skip
    """(checkpoint used, prompt + continuation) from a gpt_lm run's checkpoint."""
    from data_pipelines import vocabularies
    from tlx import checkpoint, models, steps

    cfg = steps.load_run_config(workdir)
    if cfg.model.name != "gpt_lm":
        raise ConfigError(f"{workdir} holds a {cfg.model.name!r} model; generation needs gpt_lm")
    check_flags(temperature, top_k, max_new_tokens, cfg.model.vocab_size)
    if max_new_tokens + 1 > cfg.model.max_position:
        raise ConfigError(
            f"--max_new_tokens={max_new_tokens}: the model has {cfg.model.max_position} "
            "positions in all, prompt included"
        )
    step = checkpoint.parse_choice(checkpoint_name)
    where = (
        f"{workdir}/{checkpoint.BEST_DIR}"
        if checkpoint_name == "best"
        else checkpoint.run_checkpoints(cfg, workdir)
    )
    model = models.build(cfg.model)
    vocab = vocabularies.get_vocabulary(cfg.data.vocab)
    ids = jnp.asarray([vocab.encode(prompt)], jnp.int32)
    if ids.shape[1] == 0:
        raise ConfigError(f"--prompt={prompt!r} encodes to no tokens; give some text")
    if ids.shape[1] + max_new_tokens > cfg.model.max_position:
        raise ConfigError(
            f"--prompt ({ids.shape[1]} tokens) + --max_new_tokens={max_new_tokens} exceed the "
            f"model's {cfg.model.max_position} positions"
        )
    dummy = {"input_ids": jnp.zeros((1, 8), jnp.int32)}
    abstract = nn.unbox(jax.eval_shape(model.init, jax.random.PRNGKey(0), dummy)["params"])
    cpu = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: cpu, abstract)
    step, params = checkpoint.restore_params(where, abstract, shardings, step)
    out = generate(
        model,
        params,
        ids,
        jax.random.PRNGKey(seed),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
    )
    return f"{where} step {step}", vocab.decode(out[0].tolist())


@cli_boundary
def main(argv) -> None:
    del argv
    from absl import flags

    f = flags.FLAGS
    where, text = generate_run(
        f.workdir,
        f.prompt,
        max_new_tokens=f.max_new_tokens,
        temperature=f.temperature,
        top_k=f.top_k,
        seed=f.seed,
        checkpoint_name=f.checkpoint,
    )
    print(where)
    print(text)


def run() -> None:
    from absl import app, flags

    flags.DEFINE_string("workdir", None, "A gpt_lm run directory.")
    flags.DEFINE_string("prompt", "", "Text to continue.")
    flags.DEFINE_integer("max_new_tokens", 40, "Tokens to generate.")
    flags.DEFINE_float("temperature", 0.0, "0 = greedy; else softmax temperature.")
    flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0 = all).")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    flags.DEFINE_string("checkpoint", "latest", "latest | best | a step number.")
    flags.mark_flags_as_required(["workdir"])
    app.run(main)


if __name__ == "__main__":
    run()
