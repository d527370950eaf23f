"""The node manager's ObjectTable (reference counts, containers, freeing), as a hypothesis
state machine against a model: an object with a value is freed exactly when nothing holds
it (no reference, no containing object alive, nobody waiting), and freeing a container
releases what it contains."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from zactor.runtime.object_table import ObjectTable

IDS = [bytes([i]) * 28 for i in range(6)]


class ObjectTableModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.table = ObjectTable()
        self.holds = {}          # oid -> external holds (clients, tasks)
        self.value = {}          # oid -> tuple of contained oids, once it has a value
        self.freed = set()       # what the model says is freed
        self.freed_seen = set()  # what the table freed

    def held_by_containers(self, oid):
        return sum(1 for o, contained in self.value.items()
                   if o not in self.freed for c in contained if c == oid)

    def model_free(self):
        """Free everything the model says must go, cascading through containers."""
        changed = True
        while changed:
            changed = False
            for oid in list(self.value):
                if oid in self.freed:
                    continue
                if self.holds.get(oid, 0) == 0 and self.held_by_containers(oid) == 0:
                    self.freed.add(oid)
                    changed = True

    def apply_freed(self, freed):
        for oid, _ in freed:
            assert oid in self.value and oid not in self.freed_seen, \
                "freed an object without a value, or twice"
            self.freed_seen.add(oid)

    @rule(oid=st.sampled_from(IDS))
    def add_ref(self, oid):
        if oid in self.freed:
            return  # a freed id is never referenced again (refs cannot come back)
        self.table.add_ref(oid)
        self.holds[oid] = self.holds.get(oid, 0) + 1

    @precondition(lambda self: any(n > 0 for n in self.holds.values()))
    @rule(data=st.data())
    def remove_ref(self, data):
        oid = data.draw(st.sampled_from(sorted(o for o, n in self.holds.items() if n > 0)))
        self.holds[oid] -= 1
        self.apply_freed(self.table.remove_ref(oid))
        self.model_free()

    @rule(oid=st.sampled_from(IDS), contained=st.sets(st.sampled_from(IDS), max_size=2))
    def set_value(self, oid, contained):
        if oid in self.value or oid in self.freed:
            return  # objects are immutable; a second value is ignored (tested below)
        contained = tuple(c for c in contained if c != oid and c not in self.freed)
        self.table.set_value(oid, 1, b"v", contained)
        self.value[oid] = contained
        self.apply_freed(self.table.collect_unreferenced(oid))
        self.model_free()

    @rule(oid=st.sampled_from(IDS))
    def second_value_is_ignored(self, oid):
        if oid in self.value and oid not in self.freed:
            entry, _ = self.table.set_value(oid, 2, b"other", ())
            assert entry.state == 1 and entry.data == b"v"

    @invariant()
    def same_objects_freed(self):
        assert self.freed_seen == self.freed, (self.freed_seen, self.freed)
        for oid in self.freed:
            assert oid not in self.table.entries and self.table.was_freed(oid)
        for oid in self.value:
            if oid not in self.freed:
                e = self.table.entries[oid]
                assert e.refs == self.holds.get(oid, 0) + self.held_by_containers(oid)


TestObjectTableModel = ObjectTableModel.TestCase
TestObjectTableModel.settings = settings(max_examples=200, stateful_step_count=40,
                                         deadline=None)
