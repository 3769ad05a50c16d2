"""Loop for `understudy train instruct`: multi-task demonstrations with instructions -> a transformer policy.

Read top to bottom: load the dataset(s) and the tasks they cover; encode every distinct instruction once;
put the data on the devices (replicated); build a mesh over the devices and shard each batch across it
(parameters replicated: data parallel); run K updates per jitted call; evaluate every task between calls;
export best/ and final/ policies and eval.json. `--dataset A,B,C` trains one policy on several datasets
(task id = position in the list).

The same command runs on 1 or N devices: a batch is drawn from one key whatever the device count, so for the
same global batch and seed the loss curve is the same up to float summation order.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from understudy.data.normalize import fit_normalizer
from understudy.data.samplers import sample_windows, to_device
from understudy.envs.metaworld import PROPRIO_AND_GOAL
from understudy.instruct.algo import Config, drop_words, head_name, head_options, init, optimizer, update
from understudy.instruct.augment import instruction_variants, variant_table
from understudy.instruct.model import InstructNet, init_params, observation_kind
from understudy.instruct.policy import InstructPolicy, normalize_observation
from understudy.instruct.text import InstructionEncoder, instruction_table
from understudy.policy import from_env_action
from understudy.train import run_lock
from understudy.train.common import RunArgs, eval_steps, mean_metrics, prepare_run_dir, run_config
from understudy.types import EnvSpec, UnderstudyError

UPDATES_PER_CALL = 500


# ------------------------------------------------------------------------------------------------ data
def task_name(env_id: str) -> str:
    return env_id.split("/")[-1].removeprefix("BabyAI-")


def _dataset_tasks(ds) -> list[dict]:
    meta = ds.metadata
    env_ids = meta.get("tasks") or [meta.get("env_id")]
    if not all(env_ids):
        raise UnderstudyError("The dataset does not record its environment (metadata env_id or tasks); collect it "
                              "with `understudy collect`, which records both.")
    instructions = meta.get("instructions") or {}
    return [{"name": task_name(e), "env_id": e, "env_options": dict(meta.get("env_options") or {}),
             "instructions": instructions.get(task_name(e)) or instructions.get(e)} for e in env_ids]


def load_instruct_data(paths: str):
    """(dataset, tasks) from `--dataset A[,B,...]`; several single-task datasets become one, task id = position."""
    from understudy.data import load_dataset
    from understudy.data.episodes import mix_datasets

    parts = [p for p in (paths or "").split(",") if p]
    if not parts:
        raise UnderstudyError("train instruct needs --dataset PATH (or A,B,C for several), with instructions: make "
                              "one with `understudy collect --env babyai:GoToLocal --policy bot --episodes N` or "
                              "`--env metaworld:MT10 --policy scripted`.")
    datasets = [load_dataset(p) for p in parts]
    for p, ds in zip(parts, datasets):
        if ds.instructions is None:
            raise UnderstudyError(f"{p} has no instructions (one text per episode): the instruction policy needs "
                                  "them. Collect it with --policy bot (BabyAI) or --policy scripted (Meta-World).")
    if len(datasets) == 1:
        ds = datasets[0]
        tasks = _dataset_tasks(ds)
        if ds.task_id is None:
            ds.task_id = np.zeros(ds.num_steps, np.int64)
        return ds, tasks
    tasks = []
    for p, ds in zip(parts, datasets):
        found = _dataset_tasks(ds)
        if len(found) != 1:
            raise UnderstudyError(f"{p} already holds {len(found)} tasks; pass a multi-task dataset on its own, or "
                                  "several single-task ones.")
        tasks += found
    return mix_datasets(datasets), tasks


def _spec(ds) -> EnvSpec:
    if not ds.metadata.get("spec"):
        raise UnderstudyError("The dataset's metadata lacks its environment spec; re-collect it with understudy.")
    return EnvSpec.from_dict(ds.metadata["spec"])


def observation_columns(ds, kind: str) -> tuple[Any, dict | None]:
    """Observations as the network reads them, and the normalizer of their float state part."""
    obs = ds.observations
    if kind == "grid":
        return {"image": np.asarray(obs["image"], np.uint8), "direction": np.asarray(obs["direction"], np.int32)}, None
    state = np.asarray(obs["state"] if kind == "pixels" else obs, np.float32)
    normalizer = fit_normalizer(state)
    state = normalize_observation(state, normalizer)
    return ({"state": state, "image": np.asarray(obs["image"], np.uint8)} if kind == "pixels" else state), normalizer


def image_state_features(cfg: Config, spec: EnvSpec, kind: str) -> tuple[int, ...]:
    """The state entries an image policy reads (--image-state); () means all of them."""
    if kind != "pixels" or cfg.image_state == "full":
        return ()
    if spec.family != "metaworld":
        raise UnderstudyError(f"--image-state proprio knows Meta-World's state layout only; this dataset is from "
                              f"{spec.env_id} ({spec.family}). Pass --image-state full.")
    return PROPRIO_AND_GOAL


# ------------------------------------------------------------------------------------------------ devices
def make_mesh(devices: int | None) -> Mesh:
    available = jax.devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise UnderstudyError(f"--devices {devices}: this process sees {len(available)} device(s) "
                              f"({available[0].platform}). Pass a number from 1 to {len(available)}, or leave it out.")
    return Mesh(np.asarray(available[:n]), ("data",))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A full copy on every device of the mesh (works across hosts: each host supplies the same values)."""
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Constrains every leaf's leading (batch) axis to be split across the mesh's 'data' axis."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def make_batch(data, table: dict, key: jax.Array, batch_size: int, window: int) -> dict:
    """A batch of windows with each window's instruction (that of its last step's episode)."""
    windows = sample_windows(data, key, batch_size, window)
    rows = windows.observations["instruction"][:, -1]
    if "variants" in table:  # --instruction-variants: the sentence itself or one of its variants, uniformly
        column = jax.random.randint(jax.random.fold_in(key, 2), rows.shape, 0, table["variants"].shape[1])
        rows = table["variants"][rows, column]
    return {"obs": windows.observations["obs"], "window_mask": windows.mask, "actions": windows.actions,
            "instruction": table["encoded"][rows], "instruction_mask": table["mask"][rows]}


def make_update_many(net: InstructNet, tx, data, table: dict, cfg: Config, mesh: Mesh):
    """jit: (state, key, K) -> (state, key, metrics [K]); each update samples its batch on device, sharded.

    The K updates run in one lax.scan, except for the CNN (image observations) on CPU: there XLA runs the
    convolutions inside a loop body about 15x slower than at top level (measured: 5 s vs 0.3 s an update), so
    K jitted single updates are dispatched from Python instead.
    """

    def one(carry, _):
        state, key = carry
        key, k_batch, k_loss = jax.random.split(key, 3)
        batch = make_batch(data, table, k_batch, cfg.batch_size, cfg.window)
        if cfg.word_dropout > 0:  # a key folded from the batch's: the other draws stay as without dropout
            batch["instruction_mask"] = drop_words(batch["instruction_mask"], jax.random.fold_in(k_batch, 1),
                                                   cfg.word_dropout)
        batch = shard_batch(batch, mesh)
        state, metrics = update(net, tx, state, batch, k_loss)
        return (state, key), metrics

    @functools.partial(jax.jit, static_argnames="num_updates", donate_argnames="state")
    def update_many(state, key, num_updates):
        (state, key), metrics = jax.lax.scan(one, (state, key), None, length=num_updates)
        return state, key, metrics

    if net.obs_kind != "pixels" or mesh.devices.flat[0].platform != "cpu":
        return update_many
    one_jitted = jax.jit(one, donate_argnums=0)

    def update_many_unrolled(state, key, num_updates):
        collected = []
        for _ in range(num_updates):
            (state, key), metrics = one_jitted((state, key), None)
            collected.append(metrics)
        return state, key, jax.tree.map(lambda *m: jnp.stack(m), *collected)

    return update_many_unrolled


# ------------------------------------------------------------------------------------------------ the loop
def instruction_variant_sentences(cfg: Config, sentences: list[str], seed: int) -> list[str]:
    """--instruction-variants: cfg.instruction_variants WordNet variants of each sentence, flattened in order."""
    if not cfg.instruction_variants:
        return []
    from understudy.instruct.wordnet import WordNet

    made = instruction_variants(sentences, WordNet.load(), cfg.instruction_variants, cfg.variant_word_rate, seed)
    return [variant for variants in made for variant in variants]


def prepare(cfg: Config, run: RunArgs, text_cache: str | None = None):
    """Everything a run needs before its first update (also used by the scaling benchmark and tests)."""
    ds, tasks = load_instruct_data(run.dataset)
    spec = _spec(ds)
    kind = observation_kind(spec.observation)
    obs, normalizer = observation_columns(ds, kind)
    actions = ds.actions if spec.discrete else from_env_action(ds.actions, spec)
    actions = np.asarray(actions, np.int32 if spec.discrete else np.float32)
    if spec.discrete:
        actions = actions.reshape(-1)

    train_sentences = list(ds.instructions)
    for t in tasks:  # a learned vocabulary covers every training paraphrase, never the held-out ones
        train_sentences += list((t.get("instructions") or {}).get("train") or [])
    variants = instruction_variant_sentences(cfg, sorted(set(ds.instructions)), run.seed)
    encoder = InstructionEncoder.build(train_sentences + variants, text_encoder=cfg.text_encoder,
                                       max_tokens=cfg.max_instruction_tokens, cache_dir=text_cache)
    distinct, encoded, mask, episode_rows = instruction_table(encoder, list(ds.instructions))
    table = {"encoded": encoded, "mask": mask}
    if variants:  # their rows follow the sentences' rows; table["variants"] says which belong to which
        variant_encoded, variant_mask = encoder.encode(variants)
        table = {"encoded": np.concatenate([encoded, variant_encoded]), "mask": np.concatenate([mask, variant_mask]),
                 "variants": variant_table(len(distinct), cfg.instruction_variants)}
    lengths = np.diff(np.append(ds.episode_starts, ds.num_steps))
    step_rows = np.repeat(episode_rows, lengths).astype(np.int32)

    mesh = make_mesh(cfg.devices)
    if cfg.batch_size % mesh.size:
        raise UnderstudyError(f"--batch-size {cfg.batch_size} does not split evenly over {mesh.size} devices; pass a "
                              f"multiple of {mesh.size}.")
    columns = {"observations": {"obs": obs, "instruction": step_rows}, "actions": actions,
               "rewards": ds.rewards, "terminations": ds.terminations,
               "next_observations": {"obs": obs, "instruction": step_rows}, "episode_starts": ds.episode_starts}
    data = to_device(columns)
    data = data.replace(next_observations=data.observations)  # windows do not use them; do not keep a copy
    data = replicate(data, mesh)
    table = replicate(table, mesh)

    head = head_name(cfg, spec.discrete)
    net = InstructNet(obs_kind=kind, state_features=image_state_features(cfg, spec, kind),
                      action_dim=spec.action_dim, head=head, window=cfg.window, d_model=cfg.d_model,
                      num_layers=cfg.num_layers, num_heads=cfg.num_heads, vocab_size=encoder.vocab_size,
                      max_instruction_tokens=encoder.max_tokens, film=cfg.film,
                      head_hidden_dims=tuple(cfg.head_hidden_dims),
                      head_options=tuple(sorted(head_options(cfg, head).items())))
    return {"dataset": ds, "tasks": tasks, "spec": spec, "normalizer": normalizer, "encoder": encoder,
            "data": data, "table": table, "mesh": mesh, "net": net}


def initial_state(cfg: Config, setup: dict, total_steps: int, seed: int):
    tx = optimizer(cfg, total_steps)
    example = make_batch(setup["data"], setup["table"], jax.random.PRNGKey(0), 2, cfg.window)
    params = init_params(setup["net"], example, jax.random.PRNGKey(seed))
    state = replicate(jax.device_get(init(params, tx)), setup["mesh"])
    key = replicate(np.asarray(jax.random.fold_in(jax.random.PRNGKey(seed), 1)), setup["mesh"])
    return tx, state, key


def train(algo_name: str, algo: ModuleType, cfg: Config, run: RunArgs, *, method: str | None = None) -> dict:
    from understudy.checkpoint import TrainCheckpointer
    from understudy.instruct.evaluate import evaluate_tasks
    from understudy.logging import MetricsLogger, Progress

    if cfg.distributed:
        jax.distributed.initialize()  # before anything touches a device
    if run.seeds != 1:
        raise UnderstudyError("train instruct trains one seed per run (its batch is already split across devices); "
                              "run seeds as separate runs (`understudy study instruct-*` does), with --seed S.")
    if run.env is not None:
        raise UnderstudyError("train instruct takes its tasks from the dataset; drop --env.")
    if not 0 <= cfg.word_dropout < 1:
        raise UnderstudyError(f"--word-dropout {cfg.word_dropout} must be a probability in [0, 1) (e.g. 0.2; 0 is off).")
    if cfg.instruction_variants < 0 or not 0 <= cfg.variant_word_rate <= 1:
        raise UnderstudyError(f"--instruction-variants {cfg.instruction_variants} must be >= 0 (0 is off) and "
                              f"--variant-word-rate {cfg.variant_word_rate} a probability in [0, 1] (e.g. 0.3).")
    out = run.out or f"runs/instruct-{Path(run.dataset.split(',')[0]).name}-s{run.seed}"
    text_cache = cfg.text_cache or str(Path(out) / "text_cache")
    setup = prepare(cfg, run, text_cache=text_cache)
    ds, tasks, spec, mesh = setup["dataset"], setup["tasks"], setup["spec"], setup["mesh"]
    suite = ds.metadata.get("suite") or "+".join(t["name"] for t in tasks)
    method = method or "instruct"
    config = run_config(algo_name, method, suite, run, cfg,
                        extra={"dataset_steps": int(ds.num_steps), "dataset_episodes": int(ds.num_episodes),
                               "tasks": [t["env_id"] for t in tasks], "devices": int(mesh.size)})
    main_process = jax.process_index() == 0
    run_dir = prepare_run_dir(out, resume=run.resume, overwrite=run.overwrite, config=config, algo_cfg=cfg)
    tx, state, key = initial_state(cfg, setup, run.steps, run.seed)
    checkpointer = TrainCheckpointer(run_dir / "checkpoints")
    start, meta = 0, {}
    if run.resume:
        start, tree, meta = checkpointer.restore_latest({"state": state, "key": key})
        state, key = replicate(jax.device_get(tree["state"]), mesh), replicate(jax.device_get(tree["key"]), mesh)
    update_many = make_update_many(setup["net"], tx, setup["data"], setup["table"], cfg, mesh)

    def policy_of(state) -> InstructPolicy:
        params = jax.device_get(state.params)
        return InstructPolicy(setup["net"], params, setup["encoder"], spec, setup["normalizer"], tasks,
                              metadata={"method": method, "run_dir": str(run_dir), "seed": run.seed,
                                        "dataset": run.dataset, "devices": int(mesh.size)})

    def evaluate(policy, instructions: str, episodes: int) -> dict:
        return evaluate_tasks(policy, tasks, episodes=episodes, seed=run.seed + 10_000, instructions=instructions,
                              num_envs=cfg.eval_envs)

    logger = MetricsLogger(run_dir, resume_step=start if run.resume else None, tensorboard=run.tensorboard,
                           wandb_project=run.wandb_project, config=config) if main_process else None
    progress = Progress(run.steps, f"{method} {suite}", start=start, enabled=run.progress and main_process)
    best = meta.get("best")
    elapsed_before, started = float(meta.get("time_s", 0.0)), time.time()
    step, last_evaluation = start, None
    for mark in eval_steps(run.steps, run.eval_every, start):
        collected = []
        while step < mark:
            n = min(UPDATES_PER_CALL, mark - step)
            state, key, metrics = update_many(state, key, num_updates=n)
            collected.append(jax.device_get(metrics))
            step += n
            progress.update(step)
        if not main_process:
            continue
        policy = policy_of(state)
        results = evaluate(policy, "train", run.eval_episodes)
        last_evaluation = (step, results)
        row = {"time_s": round(elapsed_before + time.time() - started, 2),
               **mean_metrics({k: np.concatenate([np.ravel(m[k]) for m in collected]) for k in collected[0]}),
               **summarize(results, "eval")}
        logger.log(step, row)
        progress.update(step, f"success {row['eval/success_rate']:.2f}")
        if best is None or row["eval/success_rate"] > best["success_rate"]:
            best = {"step": step, "success_rate": row["eval/success_rate"], "per_task": _rates(results)}
            policy.save(run_dir / "best")
        checkpointer.save(step, {"state": state, "key": key},
                          {"step": step, "best": best, "time_s": elapsed_before + time.time() - started})
    progress.close()
    checkpointer.close()
    if not main_process:
        return {}
    policy = policy_of(state)
    policy.save(run_dir / "final")
    final_episodes = run.final_eval_episodes or run.eval_episodes  # per task
    # the loop evaluated this very policy at its last step: with as many episodes, that is the final result
    known = ({"train": last_evaluation[1]} if last_evaluation and last_evaluation[0] == step
             and final_episodes == run.eval_episodes else None)
    final = final_evaluation(policy, cfg, evaluate, final_episodes, known=known)
    summary = {"method": method, "algo": algo_name, "env_id": suite, "step": step,
               "time_s": round(elapsed_before + time.time() - started, 2), "devices": int(mesh.size),
               "dataset": {"path": run.dataset, "episodes": int(ds.num_episodes), "steps": int(ds.num_steps)},
               "tasks": [t["name"] for t in tasks],
               "final": {"seeds": [{"seed": run.seed, **final}]},
               "best": {"seeds": [{"seed": run.seed, **best}]} if best else None}
    (run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    logger.close()
    run_lock.release(run_dir)
    return summary


def _rates(results: dict) -> dict:
    return {name: r["success_rate"] for name, r in results.items()}


def summarize(results: dict, prefix: str) -> dict:
    """Mean success and return over tasks, and each task's success rate."""
    row = {f"{prefix}/success_rate": float(np.mean([r["success_rate"] for r in results.values()])),
           f"{prefix}/return": float(np.mean([r["mean"] for r in results.values()]))}
    row.update({f"{prefix}/success/{name}": r["success_rate"] for name, r in results.items()})
    return row


def final_evaluation(policy, cfg: Config, evaluate, episodes: int, known: dict | None = None) -> dict:
    """The final policy on the training instructions and/or held-out paraphrases; per task and averaged.

    known: {instructions: results} already measured on this policy with these episodes (the loop's last
    evaluation; evaluation is deterministic), used instead of evaluating again.
    """
    out: dict = {}
    which = ["train", "held-out"] if cfg.eval_instructions == "both" else [cfg.eval_instructions]
    for instructions in which:
        results = (known or {}).get(instructions) or evaluate(policy, instructions, episodes)
        if not results:
            continue
        out[instructions] = {"success_rate": float(np.mean([r["success_rate"] for r in results.values()])),
                             "per_task": results}
    if not out:
        raise UnderstudyError("No task has held-out paraphrases to evaluate on; use --eval-instructions train.")
    first = out.get("train") or next(iter(out.values()))
    returns = [x for r in first["per_task"].values() for x in r["returns"]]
    successes = [x for r in first["per_task"].values() for x in r["successes"]]
    return {"returns": returns, "mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "success_rate": float(np.mean(successes)), "evaluations": out}
