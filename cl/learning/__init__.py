"""The learner core: feedback becomes examples, examples become LoRA steps, snapshots and evaluation.

What the online learner (``learners/``) and the offline retrain wire together: the learner
itself, its objectives, the feedback guard, the frozen evaluation set, data parallelism.
"""

from cl.learning.online_learner import OnlineLearner

__all__ = ["OnlineLearner"]
