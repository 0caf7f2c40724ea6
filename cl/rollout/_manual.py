"""Manual actions on a rollout: promote, roll back, roll back to, set traffic (internal).

Mixed into :class:`cl.rollout._bookkeeping.RolloutBase`, whose state and helpers they use.
"""

from __future__ import annotations

from cl.rollout._arms import ACTIVE, check_version
from cl.rollout.decision import Decision


class ManualActions:
    """What an operator can do by hand; every action returns its decision records."""

    def promote(self, version: str, *, now: float, reason: str = "manual promotion") -> list[Decision]:
        """Make ``version`` (a challenger or any other version) the champion; ends a rollout.

        Raises:
            ValueError: If it already is the champion.
        """
        check_version("version", version)
        if version == self._champion:
            raise ValueError(f"version {version!r} is already the champion; promote another version")
        return self._change_champion(version, "promote", reason, now, {"manual": True})

    def rollback(self, version: str | None = None, *, now: float, reason: str = "manual rollback") -> list[Decision]:
        """Take traffic away from a challenger, or send the champion back to the one before it.

        Args:
            version: An active challenger (its share goes to 0), or the champion (the previous
                champion returns). None: every active challenger if a rollout is in
                progress, else the champion.
            now: The caller's clock.
            reason: Why, for the record.

        Raises:
            ValueError: If ``version`` is neither, or there is no previous champion.
        """
        if version is None:
            targets = list(self.challengers) if self.active else [self._champion]
        else:
            targets = [version]
        if targets == [self._champion]:
            if not self._champions.previous:
                raise ValueError(
                    f"champion {self._champion!r} has no previous champion to roll back to; "
                    "name a version with rollback_to(version)"
                )
            return self._change_champion(self._champions.previous[-1], "rollback", reason, now, {"manual": True})
        out: list[Decision] = []
        for v in targets:
            c = self._challengers.get(v)
            if c is None or c.status != ACTIVE:
                raise ValueError(
                    f"version {v!r} is neither the champion ({self._champion!r}) nor an active challenger "
                    f"({list(self.challengers)}); to make it the champion use rollback_to({v!r})"
                )
            out += self._apply(c, ("rollback", reason, {"rule": "manual"}), now)
        if not self.challengers:
            self._end_rollout()
        return out

    def rollback_to(self, version: str, *, now: float, reason: str = "manual rollback") -> list[Decision]:
        """Make ``version`` (usually a former champion) the champion again; ends a rollout.

        Raises:
            ValueError: If it already is the champion.
        """
        check_version("version", version)
        if version == self._champion:
            raise ValueError(f"version {version!r} is already the champion; roll back to another version")
        return self._change_champion(version, "rollback", reason, now, {"manual": True})

    def set_traffic(
        self, version: str, weight: float, *, now: float, reason: str = "manual traffic change"
    ) -> list[Decision]:
        """Set an active challenger's share by hand (0 pauses it); the champion takes the rest.

        Raises:
            ValueError: If ``version`` is not an active challenger or ``weight`` is not a valid share.
        """
        c = self._challengers.get(version)
        if c is None or c.status != ACTIVE:
            hint = (
                "the champion takes what challengers leave; set a challenger's share"
                if version == self._champion
                else f"active challengers are {list(self.challengers)}; start a rollout with it first"
            )
            raise ValueError(f"set_traffic: {version!r} is not an active challenger; {hint}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"set_traffic: weight {weight!r} is not a share; use a number in [0, 1]")
        old = c.weight
        c.weight = float(weight)
        try:
            self._apply_weights()
        except ValueError:
            c.weight = old
            raise
        self._dirty = True
        return [
            self._record(
                "traffic",
                version,
                f"{reason}: share {old:g} -> {weight:g}",
                now,
                {"rule": "manual", "previous_weight": old},
            )
        ]
