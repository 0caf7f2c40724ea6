"""Learners on Ray: the online learner job over the feedback stream, and the offline retrain job.

``online`` runs :mod:`learners.feedback_loop` in Ray Train workers; ``retrain`` replays history into
a challenger; ``jobs`` submits both with ``ray job submit``. The learning itself is ``cl.learning``.
"""

__all__: list[str] = []  # entry points: learners.online.run_online_learner, learners.retrain, learners.jobs
