"""Instruction paraphrases for Meta-World tasks, with a fixed held-out split, and suite names.

Each MT10 task has 8 plain-English instructions; the first is `envs.metaworld.INSTRUCTIONS[task]`. The
last 2 (HELD_OUT_PER_TASK) are held out: they never appear in training data, so evaluating a policy on
them measures generalization to new wordings. Tasks outside MT10 have only their one INSTRUCTIONS text
(as a training instruction) and nothing held out.
"""

from __future__ import annotations

from typing import Sequence, Union

from understudy.envs import metaworld as mw
from understudy.types import UnderstudyError

MT10: tuple[str, ...] = mw.SUITES["MT10"]
HELD_OUT_PER_TASK = 2

# Training paraphrases first (index 0 = INSTRUCTIONS[task]), then HELD_OUT_PER_TASK held-out ones.
_PARAPHRASES: dict[str, tuple[str, ...]] = {
    "reach-v3": (
        "reach the goal",
        "move the gripper to the goal",
        "bring the end effector to the target position",
        "reach toward the goal position",
        "put the hand at the goal",
        "go to the target location with the arm",
        "extend the arm until the gripper touches the target point",
        "position your gripper at the marked goal",
    ),
    "push-v3": (
        "push the puck to the goal",
        "slide the puck over to the goal",
        "push the puck toward the target location",
        "shove the puck until it reaches the goal",
        "move the puck to the goal by pushing it",
        "nudge the puck onto the target",
        "without lifting it, get the puck to the goal",
        "use the gripper to push the disc to the target spot",
    ),
    "pick-place-v3": (
        "pick up the puck and place it at the goal",
        "grab the puck and put it down at the goal",
        "lift the puck and move it to the target location",
        "pick the puck up and set it at the goal position",
        "grasp the puck and carry it to the goal",
        "take the puck and place it on the target",
        "raise the puck off the table and drop it at the target point",
        "carry the disc through the air to the goal",
    ),
    "door-open-v3": (
        "open the door",
        "pull the door open",
        "swing the door open",
        "open up the door",
        "grab the door handle and open the door",
        "move the door to the open position",
        "get the door open by pulling its handle",
        "swing the cabinet door wide open",
    ),
    "drawer-open-v3": (
        "open the drawer",
        "pull the drawer open",
        "slide the drawer out",
        "pull out the drawer",
        "grab the drawer handle and pull it open",
        "open up the drawer",
        "draw the drawer out toward you",
        "use the handle to slide the drawer open",
    ),
    "drawer-close-v3": (
        "push the drawer closed",
        "close the drawer",
        "slide the drawer shut",
        "push the drawer in",
        "shut the drawer",
        "push the open drawer back in",
        "slide the drawer back into the cabinet until it is closed",
        "make the drawer shut by pushing it",
    ),
    "button-press-topdown-v3": (
        "press the button from the top",
        "push the button down from above",
        "press down on the button from above",
        "push the button from the top",
        "press the button downward",
        "hit the button from above",
        "lower the gripper onto the button and press it",
        "push down on the top of the button",
    ),
    "peg-insert-side-v3": (
        "insert the peg into the hole from the side",
        "put the peg in the hole from the side",
        "slide the peg sideways into the hole",
        "pick up the peg and insert it into the side hole",
        "push the peg into the hole on the side",
        "grab the peg and insert it sideways into the hole",
        "fit the peg into the opening from the side",
        "take the peg and stick it into the hole sideways",
    ),
    "window-open-v3": (
        "slide the window open",
        "open the window",
        "push the window open",
        "slide the window to open it",
        "move the window sash to open the window",
        "open the sliding window",
        "push the window sideways until it is open",
        "get the window open by sliding it",
    ),
    "window-close-v3": (
        "slide the window closed",
        "close the window",
        "push the window shut",
        "slide the window shut",
        "shut the sliding window",
        "move the window to close it",
        "push the window sideways until it is closed",
        "get the window closed by sliding it",
    ),
}


def task_name(task: str) -> str:
    """The bare task name ("reach-v3") for "reach-v3", "metaworld/reach-v3" or "metaworld:reach-v3"."""
    for prefix in (mw.ALIAS_PREFIX, mw.PREFIX):
        if task.startswith(prefix):
            task = task[len(prefix):]
            break
    if task not in mw.INSTRUCTIONS:
        import difflib

        close = difflib.get_close_matches(task, list(mw.INSTRUCTIONS), n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UnderstudyError(f"Unknown Meta-World task '{task}'.{hint} Use a v3 task name such as reach-v3 "
                              "(understudy.envs.list_envs()['metaworld'] lists all 50).")
    return task


def paraphrases(task: str) -> dict[str, list[str]]:
    """{"train": [...], "held_out": [...]} instructions for a Meta-World task.

    MT10 tasks: 6 training and 2 held-out paraphrases. Other tasks: their one INSTRUCTIONS text as the
    only training instruction, nothing held out.
    """
    task = task_name(task)
    texts = _PARAPHRASES.get(task)
    if texts is None:
        return {"train": [mw.INSTRUCTIONS[task]], "held_out": []}
    return {"train": list(texts[:-HELD_OUT_PER_TASK]), "held_out": list(texts[-HELD_OUT_PER_TASK:])}


def suite_tasks(name: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """The bare task names of a suite, in task-id order.

    name: "MT10" (also "metaworld:MT10"), "MT1:<task>" or a single task name ("reach-v3",
        "metaworld:reach-v3") for one task, or a sequence of task names (a custom suite).
    """
    if not isinstance(name, str):
        tasks = tuple(task_name(t) for t in name)
        if not tasks or len(set(tasks)) != len(tasks):
            raise UnderstudyError(f"A custom suite needs one or more distinct Meta-World tasks, got {list(name)!r}.")
        return tasks
    suite = mw.suite_name(name)
    if suite is not None:
        return mw.SUITES[suite]
    bare = name[len(mw.ALIAS_PREFIX):] if name.startswith(mw.ALIAS_PREFIX) else name
    if bare.upper().startswith("MT1:"):
        return (task_name(bare[len("MT1:"):]),)
    if bare.startswith(mw.PREFIX) or bare in mw.INSTRUCTIONS:
        return (task_name(bare),)
    raise UnderstudyError(f"Unknown Meta-World suite or task '{name}'. Use a suite ({', '.join(mw.SUITES)}, e.g. "
                          "metaworld:MT10), MT1:<task> or a task name such as metaworld:reach-v3.")


def suite_label(name: Union[str, Sequence[str]]) -> str:
    """How a suite is recorded in dataset metadata: "MT10", "MT1:reach-v3", or "custom" for a task list."""
    if not isinstance(name, str):
        return "custom"
    suite = mw.suite_name(name)
    if suite is not None:
        return suite
    tasks = suite_tasks(name)
    return f"MT1:{tasks[0]}"
