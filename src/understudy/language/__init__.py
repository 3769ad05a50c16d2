"""Language: captioned trajectory corpora, the trajectory–sentence reward model, and RL from a sentence.

    from understudy.language import RewardModel
    model = RewardModel.load("runs/reward")          # from `understudy language train-reward`
    model.score(states, actions, ["The car is able to reach the top of the mountain"])
"""

_LAZY = {
    "RewardModel": ("understudy.language.reward_model", "RewardModel"),
    "RewardTrainConfig": ("understudy.language.train_reward", "RewardTrainConfig"),
    "train_reward_model": ("understudy.language.train_reward", "train_reward_model"),
    "evaluate_reward_model": ("understudy.language.train_reward", "evaluate_reward_model"),
    "MountainCarCaptioner": ("understudy.language.captions", "MountainCarCaptioner"),
    "make_corpus": ("understudy.language.corpus", "make_corpus"),
    "LanguageReward": ("understudy.language.env_reward", "LanguageReward"),
    "LanguageRewardConfig": ("understudy.language.env_reward", "LanguageRewardConfig"),
    "PretrainedTextEncoder": ("understudy.language.pretrained", "PretrainedTextEncoder"),
    "behaviour_rates": ("understudy.language.behaviour", "behaviour_rates"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'understudy.language' has no attribute {name!r}")
