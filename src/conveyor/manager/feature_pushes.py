"""How the manager runs the features' push hooks: the push chain with its gates, cut where a
feature takes pushed jobs together (``Feature.push_many``: a PUSHB's batch jobs are marked in
one store step), on the long way and in the caller's step.

Mixed into ``Manager`` through ``FeatureCalls``; see docs/design/layout.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, cast

from conveyor.errors import CommandError
from conveyor.job import Job, encode_job
from conveyor.manager.features.base import Feature
from conveyor.manager.middleware import Drop, Middleware, PushContext, run_chain

__all__ = ["Gate", "Hook", "PushCalls", "nothing"]

Hook = Callable[..., Awaitable[None]]
Gate = Callable[[Job], bool]


class _Segment:
    """Push hooks run as one chain, with their gates (None: a middleware's, which wants every
    job); a feature that takes pushed jobs together (``push_many``) comes after it, if any."""

    __slots__ = ("bulk", "by_key", "gates", "hooks", "keys")

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.gates: list[Gate | None] = []
        self.bulk: Feature | None = None
        self.by_key: dict[str, tuple[int, ...]] = {}
        """The gates (their places in ``hooks``) that may want a job holding each key of
        ``custom``, when every gate says which (``Feature.push_keys``)."""
        self.keys: frozenset[str] | None = None
        """The keys of ``by_key`` (None: some gate cannot say): a job whose ``custom`` holds
        none of them is wanted by no gate of the segment."""


class PushCalls:
    """The push half of ``FeatureCalls``; relies on the manager's middleware list."""

    _middleware: list[Middleware]
    _push_nows: dict[Hook, Callable[[Job], bool]]
    """The push hooks that have a synchronous twin (``Feature.push_now``), with it."""
    _segments: list[_Segment]
    _push_gated: bool
    _push_any: bool
    _pushers: list[Middleware]
    _push_on_custom: bool
    _push_declared: frozenset[str] | None
    """Every key of ``custom`` some push gate or ``push_many`` feature declares
    (``Feature.push_keys``); None when one cannot say, or a middleware has no gate."""
    _push_owners: dict[str, Feature]
    """The declared keys that only one feature wants, one with a push hook that may run in
    the caller's step (``push_now``), with it: a job holding no other declared key skips the
    chain (``_admit_alone``)."""
    _push_sole: dict[str, Feature]
    """Every declared key that only one feature wants, with it (with a ``push_now`` or not):
    a job holding no other declared key is wanted by that feature's gate or by none."""

    if TYPE_CHECKING:  # FeatureCalls': what a refused job's hooks are told

        async def removed(self, payloads: Sequence[bytes]) -> None: ...

    def _plan_pushes(self) -> None:
        """Cut the push hooks where a feature takes pushed jobs together (``push_many``):
        the hooks before it run to their end first (a job they refuse is never marked), then
        it takes the survivors in one step, then the hooks after it."""
        segments = [_Segment()]
        nows: dict[Hook, Callable[[Job], bool]] = {}
        for m in self._middleware:
            if isinstance(m, Feature) and type(m).push_many is not Feature.push_many:
                segments[-1].bulk = m
                segments.append(_Segment())
            elif type(m).push is not Middleware.push:
                segments[-1].hooks.append(m.push)
                segments[-1].gates.append(m.wants_push if isinstance(m, Feature) else None)
                if isinstance(m, Feature) and type(m).push_now is not Feature.push_now:
                    nows[segments[-1].hooks[-1]] = m.push_now
        self._segments = segments
        self._push_nows = nows
        self._plan_push_keys()
        gates = [gate for segment in segments for gate in segment.gates]
        self._push_gated = all(gate is not None for gate in gates)
        self._push_any = len(segments) > 1 or bool(gates)
        pushers = [m for m in self._middleware if type(m).push is not Middleware.push]
        pushers += [segment.bulk for segment in segments if segment.bulk is not None]
        self._pushers = pushers
        self._push_on_custom = self._pushing_on_custom()

    def _plan_push_keys(self) -> None:
        """Note which gates of each segment want which keys of ``custom`` (again after a
        reload: results' depend on its defaults)."""
        for segment in self._segments:
            owners = [getattr(gate, "__self__", None) for gate in segment.gates]
            declared = [o.push_keys if isinstance(o, Feature) else None for o in owners]
            by_key: dict[str, tuple[int, ...]] = {}
            for place, keys in enumerate(declared):
                for key in keys or ():
                    by_key[key] = (*by_key.get(key, ()), place)
            segment.by_key = by_key
            segment.keys = None if None in declared else frozenset(by_key)
        self._plan_owners()

    def _plan_owners(self) -> None:
        """``_push_declared`` and ``_push_owners``, from the segments' gates and features."""
        self._push_declared, self._push_owners, self._push_sole = None, {}, {}
        owners: dict[str, list[Feature]] = {}
        for segment in self._segments:
            if segment.keys is None:
                return
            for gate in segment.gates:  # each a feature's (keys None: a middleware's)
                feature = getattr(gate, "__self__", None)
                if isinstance(feature, Feature):
                    for key in feature.push_keys or ():
                        owners.setdefault(key, []).append(feature)
            bulk = segment.bulk
            if bulk is not None:
                keys = bulk.push_keys
                if keys is None:
                    return
                for key in keys:
                    owners.setdefault(key, []).append(bulk)
        self._push_declared = frozenset(owners)
        self._push_sole = {key: found[0] for key, found in owners.items() if len(found) == 1}
        self._push_owners = {
            key: sole
            for key, sole in self._push_sole.items()
            if type(sole).push_now is not Feature.push_now
            and type(sole).push_many is Feature.push_many  # not a bulk feature
        }

    def _pushing_on_custom(self) -> bool:
        """Whether every push hook (and ``push_many``) leaves a job without ``custom`` alone
        (``Feature.pushes_on_custom``, read again after a reload)."""
        return all(isinstance(m, Feature) and m.pushes_on_custom for m in self._pushers)

    def _admits(self, job: Job) -> bool:
        """Whether some push hook or ``push_many`` wants ``job`` (then it cannot take a path
        that runs none: ``soon.push_soon``)."""
        if not self._push_any or (job.custom is None and self._push_on_custom):
            return False
        custom, declared = job.custom, self._push_declared
        if custom is not None and declared is not None:
            held = custom.keys() & declared
            if not held:
                return False
            sole = self._sole_owner(held)
            if sole is not None:  # the other gates want none of its keys
                return sole.wants_push(job)
        for segment in self._segments:
            if self._chosen(job, segment):
                return True
            bulk = segment.bulk
            if bulk is not None and bulk.wants_push(job):
                return True
        return False

    def _marks_only(self, job: Job) -> Feature | None:
        """The one feature whose ``push_many`` wants ``job`` when no push hook does (a batch
        or tracked job and nothing else: ``soon.push_soon`` may mark it with a callback)."""
        found: Feature | None = None
        for segment in self._segments:
            if self._chosen(job, segment):
                return None
            bulk = segment.bulk
            if bulk is not None and bulk.wants_push(job):
                if found is not None:
                    return None
                found = bulk
        return found

    def _chosen(self, job: Job, segment: _Segment) -> list[Hook]:
        """The hooks of ``segment`` that ``job`` goes through: every one when some middleware
        is not a feature, else those of the features whose gate wants it (often none)."""
        if not self._push_gated or not segment.hooks:
            return segment.hooks
        custom = job.custom
        if custom is None and self._push_on_custom:
            return []
        keys = segment.keys
        if keys is not None:  # each gate wants only jobs holding one of its keys
            if custom is None or custom.keys().isdisjoint(keys):
                return []
            return self._chosen_by_keys(job, custom.keys() & keys, segment)
        chosen: list[Hook] = []
        for hook, wants in zip(segment.hooks, segment.gates, strict=True):
            if wants is not None and wants(job):
                chosen.append(hook)
        return chosen

    @staticmethod
    def _chosen_by_keys(job: Job, held: set[str], segment: _Segment) -> list[Hook]:
        """The hooks of the gates of the keys ``held`` that want ``job``, in chain order."""
        by_key = segment.by_key
        if len(held) == 1:
            places: Sequence[int] = by_key[next(iter(held))]
        else:
            places = sorted({place for key in held for place in by_key[key]})
        chosen: list[Hook] = []
        for place in places:
            wants = segment.gates[place]
            if wants is not None and wants(job):
                chosen.append(segment.hooks[place])
        return chosen

    async def _admit(self, job: Job) -> Drop | None:
        """Run the push hooks on ``job`` (the long way): a ``Drop`` when one kept it out of the
        queue, None to store it; raises what refused it."""
        if not self._push_any or (job.custom is None and self._push_on_custom):
            return None
        taken = False  # some hook took the job in: a later refusal tells them (removed)
        for segment in self._segments:
            hooks = self._chosen(job, segment)
            try:
                if hooks:
                    await run_chain(hooks, PushContext(self, job), nothing)  # type: ignore[arg-type]
                    taken = True
                bulk = segment.bulk
                if bulk is not None and bulk.wants_push(job):
                    verdict = (await bulk.push_many([job])).get(job.jid)
                    if verdict is not None:
                        raise verdict
                    taken = True
            except Drop as dropped:
                return dropped
            except CommandError:
                if taken:
                    await self.removed([encode_job(job)])
                raise
        return None

    def _admit_now(self, job: Job) -> tuple[bool, Drop | None] | None:
        """``_admit`` done in the caller's step (an in-process store): whether some hook
        took the job, and its ``Drop``; None, to take the long way, when a hook would wait or
        a refusal must be told to hooks that took the job. Raises what refused the job when
        no hook had taken it."""
        custom = job.custom
        if custom is None:
            if self._push_on_custom:
                return False, None
        elif self._push_declared is not None:
            alone = self._admit_alone(job, custom.keys() & self._push_declared)
            if alone is not None:
                return alone
        taken = False
        for segment in self._segments:
            hooks = self._chosen(job, segment)
            try:
                if hooks:
                    if not self._push_chain_now(job, hooks):
                        return None  # a hook waited: the long way runs the (idempotent) chain again
                    taken = True
                bulk = segment.bulk
                if bulk is not None and bulk.wants_push(job):
                    done = bulk.push_many_now(job)
                    if done is None:
                        return None
                    verdict = done.get(job.jid)
                    if verdict is not None:
                        raise verdict
                    taken = True
            except Drop as dropped:
                return True, dropped
            except CommandError:
                if taken:
                    return None  # the long way refuses it again, and tells the hooks
                raise
        return taken, None

    def _admit_alone(self, job: Job, held: set[str]) -> tuple[bool, Drop | None] | None:
        """``_admit_now`` of a job whose ``custom`` holds the declared keys ``held`` (every
        gate has declared its keys): none, no hook wants it; only keys of one feature, none
        when its gate does not want the job (results' valid ``result_ttl``), else, with a
        ``push_now`` (a unique job's), that hook alone, called directly (what the chain would
        run: the other gates want none of its keys). None for the chain (keys of several
        features, a feature without ``push_now``, or ``push_now`` declined)."""
        if not held:
            return False, None
        owner = self._sole_owner(held)
        if owner is None:
            return None
        if not owner.wants_push(job):
            return False, None
        if self._push_owners.get(next(iter(held))) is not owner:
            return None  # no push_now of its own (or a bulk feature's): the chain runs it
        try:
            if owner.push_now(job):
                return True, None
        except Drop as dropped:
            return True, dropped
        return None

    def _wanted_by_none(self, job: Job) -> bool:
        """Whether no push hook or ``push_many`` can want ``job``, by the declared keys its
        ``custom`` holds (as ``_admit_alone``): none of them, or only keys of one feature
        whose gate does not want it. False when that cannot be told so."""
        custom, declared = job.custom, self._push_declared
        if custom is None:
            return self._push_on_custom
        if declared is None:
            return False
        held = custom.keys() & declared
        if not held:
            return True
        sole = self._sole_owner(held)
        return sole is not None and not sole.wants_push(job)

    def _sole_owner(self, held: set[str]) -> Feature | None:
        """The one feature that declares every key of ``held`` alone, else None."""
        sole = self._push_sole
        owner: Feature | None = None
        for key in held:
            found = sole.get(key)
            if found is None or (owner is not None and found is not owner):
                return None
            owner = found
        return owner

    async def _admit_many(
        self, prepared: list[tuple[Job, float | None]], errors: dict[str, str]
    ) -> tuple[list[tuple[Job, float | None]], list[Awaitable[None]]]:
        """``_admit`` for the jobs of a PUSHB, each ``push_many`` once for all of them.
        Returns the jobs to store and the durability of the writes of those kept elsewhere;
        the refused ones go into ``errors``."""
        kept_elsewhere: list[Awaitable[None]] = []
        taken: set[str] = set()
        refused: list[Job] = []

        def refuse(job: Job, exc: CommandError) -> None:
            errors[job.jid] = exc.message if exc.code == "ERR" else str(exc)
            if job.jid in taken:
                refused.append(job)

        def keep(dropped: Drop) -> None:
            if dropped.durable is not None:
                kept_elsewhere.append(dropped.durable)

        alive = prepared
        if self._push_any:
            # the jobs no gate can want, by their keys alone, skip every segment's look
            none = {id(job) for job, _ in prepared if self._wanted_by_none(job)}
            for segment in self._segments:
                survivors: list[tuple[Job, float | None]] = []
                for job, due in alive:
                    if id(job) in none:
                        survivors.append((job, due))
                        continue
                    hooks = self._chosen(job, segment)
                    try:
                        if hooks:
                            await run_chain(hooks, PushContext(self, job), nothing)  # type: ignore[arg-type]
                            taken.add(job.jid)
                    except Drop as dropped:
                        keep(dropped)
                    except CommandError as exc:  # middleware codes (NOTUNIQUE, ...) keep theirs
                        refuse(job, exc)
                    else:
                        survivors.append((job, due))
                alive = survivors
                bulk = segment.bulk
                wanted = [
                    job
                    for job, _ in alive
                    if bulk is not None and id(job) not in none and bulk.wants_push(job)
                ]
                if bulk is None or not wanted:
                    continue
                verdicts = await bulk.push_many(wanted)
                survivors = []
                for job, due in alive:
                    verdict = verdicts.get(job.jid)
                    if isinstance(verdict, Drop):
                        keep(verdict)
                    elif verdict is not None:
                        refuse(job, verdict)
                    else:
                        survivors.append((job, due))
                taken.update(job.jid for job in wanted)
                alive = survivors
        if refused:
            await self.removed([encode_job(job) for job in refused])
        return alive, kept_elsewhere

    def _push_chain_now(self, job: Job, hooks: list[Callable[..., Awaitable[None]]]) -> bool:
        """Run the push chain for ``job`` to its end in this very step (the PUSH fast path of
        an in-process store, whose writes never wait). False when a hook waited after all:
        the chain is closed where it stood, and the PUSH takes the long way, which runs it
        again (hooks are idempotent: a PUSH retried after a lost reply runs them twice too).
        Raises what the hooks raise (``Drop``, ``NotUnique``, ``InvalidJob``)."""
        if len(hooks) == 1:  # one feature's hook (a unique job's): its own, without coroutine
            now = self._push_nows.get(hooks[0])
            if now is not None and now(job):
                return True
        ctx = PushContext(self, job)  # type: ignore[arg-type]
        # one hook (a unique job's): called as run_chain would, without its two coroutines
        chain = cast(
            "Coroutine[object, None, None]",
            hooks[0](ctx, nothing) if len(hooks) == 1 else run_chain(hooks, ctx, nothing),
        )
        try:
            chain.send(None)
        except StopIteration:
            return True
        chain.close()
        return False


async def nothing() -> None:
    """The end of a chain: nothing after the last hook."""
    return None
