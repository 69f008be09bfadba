"""`People`: the people of one data folder, as the CLI, the API, forget and the Dagster asset use them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facepipe.faces.records import Box
from facepipe.people import constraints, graph, identity, review, rewrite, state
from facepipe.people.constraints import FaceAt
from facepipe.people.records import (
    Conflict,
    NotFound,
    PeopleError,
    Person,
    PersonIdSink,
    Stat,
    UpdateReport,
    person_number,
)
from facepipe.statedb import StateDB
from facepipe.stores.parquet import ParquetStore

SNAPSHOT_FILE = "people.parquet"

NAME_LENGTH = 200
"""Characters a name may have."""

WHO = "facepipe"
"""Who an edit is logged as when the caller does not say (the CLI says the user, the API the client)."""


class People:
    """The people state of one data folder; every method opens and closes its own connection.

    `data_dir` holds `people.sqlite`; `parquet` is the faces dataset clustered (by default the
    `parquet` folder of `data_dir`).
    """

    def __init__(self, data_dir: Path | str, parquet: ParquetStore | None = None, db: StateDB | None = None) -> None:
        self.data = Path(data_dir)
        self.parquet = parquet or ParquetStore(self.data / "parquet")
        self.db: StateDB = db or state.sqlite_db(self.data)
        """Where the state lives: `people.sqlite` here, or the shared Postgres (`FACEPIPE_PG_DSN`)."""

    @property
    def path(self) -> Path:
        return self.data / state.STATE_FILE

    @property
    def snapshot_path(self) -> Path:
        return self.parquet.base / SNAPSHOT_FILE

    # -- reads ---------------------------------------------------------------------------------------------

    def list(self) -> list[Person]:
        """Persons with at least one face, largest first."""
        if not self.db.exists():
            return []
        with state.reading(self.db) as st:
            return st.persons()

    def get(self, person_id: str) -> Person:
        """One person (a merged id answers as the person it was merged into)."""
        if not self.db.exists():
            raise NotFound(f"no person {person_id!r}: people have not been clustered yet")
        with state.reading(self.db) as st:
            pid = st.canonical(person_id)
            found = st.persons(only=pid)
            return found[0] if found else Person(pid, st.name_of(pid), 0, [])

    def canonical(self, person_id: str) -> str:
        with state.reading(self.db) as st:
            return st.canonical(person_id)

    def names(self) -> dict[str, tuple[str, str | None]]:
        """Every person id ever given -> (the person it now is, that person's name)."""
        if not self.db.exists():
            return {}
        with state.reading(self.db) as st:
            return st.names()

    def image_of_face(self, face_id: str) -> str | None:
        if not self.db.exists():
            return None
        with state.reading(self.db) as st:
            return st.image_of_face(face_id)

    def face_files(self) -> dict[str, Stat]:
        """Every faces Parquet file (path relative to parquet/faces) with its (mtime_ns, size)."""
        return self.parquet.face_file_stats()

    def is_stale(self) -> bool:
        """Whether any faces Parquet file appeared, changed or vanished since the last update (stat only)."""
        seen = self.face_files()
        return self._known_files() != seen

    def unseen_face_files(self) -> list[str]:
        """Faces files (relative to parquet/faces) written since the last update (stat only): the only
        files holding faces the state does not know yet."""
        known = self._known_files()
        return sorted(rel for rel, stat in self.face_files().items() if known.get(rel) != stat)

    def _known_files(self) -> dict[str, Stat]:
        if not self.db.exists():
            return {}
        with state.reading(self.db) as st:
            return {rel: stat for rel, (_, stat) in st.files().items()}

    # -- edits: each one logged (who, when, what) and undoable; they become rules every re-clustering keeps --

    def name(self, person_id: str, name: str | None, who: str = WHO) -> Person:
        """Give a person a name (None or blank: remove it). Names survive re-clustering."""
        name = " ".join((name or "").split()) or None
        if name and len(name) > NAME_LENGTH:
            raise PeopleError(f"a name has at most {NAME_LENGTH} characters")
        with state.writing(self.db) as st:
            pid = st.canonical(person_id)
            st.begin_edit(who, "name", {"person_id": pid, "name": name})
            st.set_name(pid, name)
        self.write_snapshot()
        return self.get(pid)

    def hide(self, person_id: str, hidden: bool = True, who: str = WHO) -> Person:
        """Hide a person from the people page (or show them again); their faces stay theirs."""
        with state.writing(self.db) as st:
            pid = st.canonical(person_id)
            st.begin_edit(who, "hide", {"person_id": pid, "hidden": hidden})
            st.set_hidden(pid, hidden)
        self.write_snapshot()
        return self.get(pid)

    def merge(self, keep: str, fold: str, stores: Sequence[PersonIdSink] = (), who: str = WHO) -> tuple[Person, int]:
        """Fold person `fold` into `keep`: its faces take `keep`'s id in Parquet and the stores, now and
        after every later clustering. `keep` takes `fold`'s name if it has none. Returns (person, faces moved)."""
        return self.merge_all(keep, [fold], stores, who)

    def merge_all(
        self,
        keep: str,
        folds: Sequence[str],
        stores: Sequence[PersonIdSink] = (),
        who: str = WHO,
        action: str = "merge",
    ) -> tuple[Person, int]:
        """Fold every person of `folds` into `keep`, as one edit; refused when two of them have a face in
        the same photo (one person never holds two faces of one photo)."""
        if not folds:
            raise PeopleError("name the persons to merge")
        with state.writing(self.db) as st:
            a = st.canonical(keep)
            bs = list(dict.fromkeys(st.canonical(f) for f in folds))
            for f, b in zip(folds, bs, strict=False):
                if a == b:
                    raise Conflict(f"{keep} and {f} are already the same person ({a})")
            photos = {f.image_key for f in st.faces_of(a)}
            for b in bs:
                shared = sorted(photos & {f.image_key for f in st.faces_of(b)})
                if shared:
                    raise Conflict(f"{a} and {b} both have a face in {shared[0]}: move one of them out first")
                photos |= {f.image_key for f in st.faces_of(b)}
            moved_faces = [f.face_id for b in bs for f in st.faces_of(b)]
            st.begin_edit(who, action, {"person_id": a, "from": bs}, moved_faces)
            moved = [m for b in bs for m in st.fold(a, b)]
            self._publish(st, {fid: a for fid, _ in moved}, stores)
        self.write_snapshot()
        return self.get(a), len(moved)

    def split(
        self, person_id: str, face_ids: Sequence[str], stores: Sequence[PersonIdSink] = (), who: str = WHO
    ) -> Person:
        """Move these faces of a person to a new person (answered); the two stay apart from now on."""
        face_ids = list(dict.fromkeys(face_ids))
        if not face_ids:
            raise PeopleError("select the faces to split off")
        with state.writing(self.db) as st:
            pid = st.canonical(person_id)
            faces = self._faces(st, face_ids)
            for f in faces:
                if f.person_id != pid:
                    raise Conflict(f"face {f.face_id} is not in {pid} (it is in {f.person_id or 'no person'})")
            edit = st.begin_edit(who, "split", {"person_id": pid, "face_ids": face_ids}, face_ids)
            new = st.new_person(state.timestamp())
            for f in faces:
                st.add_rule(edit, "is", new, f)
            st.add_apart(edit, pid, new)
            self._publish(st, dict.fromkeys(face_ids, new), stores)
            self._refresh(st, [pid, new])
        self.write_snapshot()
        return self.get(new)

    def move(
        self,
        face_id: str,
        person_id: str | None,
        stores: Sequence[PersonIdSink] = (),
        who: str = WHO,
        action: str = "move",
    ) -> Person | None:
        """Put one face in another person (None: in no person); the face's old person and the new one
        stay apart from now on. Returns the person the face is now in."""
        with state.writing(self.db) as st:
            (face,) = self._faces(st, [face_id])
            target = st.canonical(person_id) if person_id else None
            if target and target != face.person_id:
                taken = [f for f in st.faces_of(target) if f.image_key == face.image_key]
                if taken:
                    raise Conflict(f"{target} already has a face in {face.image_key} ({taken[0].face_id})")
            edit = st.begin_edit(who, action, {"face_id": face_id, "from": face.person_id, "to": target}, [face_id])
            st.add_rule(edit, "is", target, face)
            if face.person_id and target and face.person_id != target:
                st.add_apart(edit, face.person_id, target)
            self._publish(st, {face_id: target}, stores)
            self._refresh(st, [p for p in (face.person_id, target) if p])
        self.write_snapshot()
        return self.get(target) if target else None

    def reject(self, person_id: str, other: str, who: str = WHO) -> None:
        """Two persons are different people (a review suggestion declined): clustering keeps them apart."""
        with state.writing(self.db) as st:
            a, b = st.canonical(person_id), st.canonical(other)
            if a == b:
                raise Conflict(f"{person_id} and {other} are the same person ({a})")
            edit = st.begin_edit(who, "review", {"reject": [a, b]})
            st.add_apart(edit, a, b)

    def reject_face(self, face_id: str, person_id: str, who: str = WHO) -> None:
        """A face is not this person (a review suggestion declined): clustering never puts it there."""
        with state.writing(self.db) as st:
            (face,) = self._faces(st, [face_id])
            pid = st.canonical(person_id)
            edit = st.begin_edit(who, "review", {"reject_face": face_id, "person_id": pid})
            st.add_rule(edit, "not", pid, face)

    def log(self, limit: int | None = None) -> list[dict]:
        """The edit log, newest first: id, at, who, action, detail, undone_at."""
        if not self.db.exists():
            return []
        with state.reading(self.db) as st:
            return st.edits(limit)

    def undo(self, n: int = 1, stores: Sequence[PersonIdSink] = ()) -> list[dict]:
        """Revert the last `n` edits not undone yet, newest first; returns them as the log shows them."""
        if n < 1:
            raise PeopleError("undo at least one edit")
        with state.writing(self.db) as st:
            ids = st.last_edits(n)
            touched: set[str] = set()
            for edit_id in ids:
                changes = st.undo(edit_id)
                touched |= {p for p in changes.values() if p}
                self._publish(st, changes, stores)
            self._refresh(st, sorted(touched))
            undone = [e for e in st.edits() if e["id"] in ids]
        self.write_snapshot()
        return undone

    # -- review and evaluation -----------------------------------------------------------------------------

    def suggestions(self, limit: int = 50) -> list[dict]:
        """ "Maybe the same person": pairs of persons and faces in no person, nearest first (see `review`)."""
        if not self.db.exists():
            return []
        with state.reading(self.db) as st:
            faces = st.every_face()
            hidden = {p.person_id for p in st.persons() if p.hidden}
            covers = st.covers({f.person_id for f, _ in faces if f.person_id})
            groups = [
                g
                for g in review.by_person(((f.person_id, f.face_id, f.image_key, e) for f, e in faces), covers)
                if g.person_id not in hidden
            ]
            loose_faces = [f for f, _ in faces if not f.person_id]
            rules = constraints.match(st.rules_of_images([f.image_key for f in loose_faces]), loose_faces)
            pins, nots = constraints.pins_and_nots(rules)
            vectors = {f.row: e for f, e in faces}
            loose = [
                review.Loose(f.face_id, f.image_key, vectors[f.row], frozenset(nots.get(f.row, ())))
                for f in loose_faces
                if pins.get(f.row) != constraints.NOBODY
            ]
            return review.suggestions(groups, loose, st.apart_pairs(), limit)

    def decide(self, suggestion: Mapping, accept: bool, stores: Sequence[PersonIdSink] = (), who: str = WHO) -> None:
        """Accept (merge, or put the face in the person) or reject (keep them apart) one suggestion."""
        kind = suggestion.get("kind")
        if kind == "persons":
            a, b = suggestion["person_id"], suggestion["other_id"]
            if accept:
                self.merge_all(a, [b], stores, who, action="review")
            else:
                self.reject(a, b, who)
        elif kind == "face":
            fid, pid = suggestion["face_id"], suggestion["person_id"]
            if accept:
                self.move(fid, pid, stores, who, action="review")
            else:
                self.reject_face(fid, pid, who)
        else:
            raise PeopleError("a suggestion's kind is 'persons' or 'face'")

    def unassigned(self, limit: int = 200) -> list[dict]:
        """Faces in no person (seen once, or taken out by hand): face_id, image_key, box."""
        if not self.db.exists():
            return []
        with state.reading(self.db) as st:
            faces = st.faces_at("id IN (SELECT id FROM faces WHERE person_id IS NULL ORDER BY id LIMIT ?)", (limit,))
        return [{"face_id": f.face_id, "image_key": f.image_key, "box": list(f.box) if f.box else None} for f in faces]

    def evaluate(self, thresholds: Sequence[float] = review.SWEEP) -> dict:
        """How the clustering agrees with the persons the user named (the labels; one name = one label):
        pairwise precision/recall per threshold, the current one and the best by F1."""
        with state.reading(self.db) as st:
            named = {p.person_id: p.name for p in st.persons() if p.name}
            faces = [(f, e) for f, e in st.every_face() if f.person_id in named]
        labels = [named[f.person_id] for f, _ in faces]
        if len(set(labels)) < 1 or len(labels) < 2:
            raise PeopleError("name at least one person with two faces first (`facepipe people name ID NAME`)")
        rows = review.evaluate(labels, [f.image_key for f, _ in faces], np.stack([e for _, e in faces]), thresholds)
        best = max(rows, key=lambda r: (r["f1"], -abs(r["threshold"] - graph.THRESHOLD)))
        current = next((r for r in rows if r["threshold"] == graph.THRESHOLD), None)
        return {"faces": len(labels), "names": len(set(labels)), "current": current, "best": best, "sweep": rows}

    @staticmethod
    def _faces(st: state.State, face_ids: Sequence[str]) -> list[FaceAt]:
        found = st.faces_by_id(face_ids)
        missing = [f for f in face_ids if f not in found]
        if missing:
            raise NotFound(f"no face {missing[0]!r} in the people state")
        return [found[f] for f in face_ids]

    def _publish(self, st: state.State, changes: Mapping[str, str | None], stores: Sequence[PersonIdSink]) -> None:
        """face_id -> person: into the people state, the faces Parquet and the stores, now."""
        st.set_faces(changes)
        image_of = {f.face_id: f.image_key for f in st.faces_by_id(list(changes)).values()}
        by_image: dict[str, dict[str, str | None]] = defaultdict(dict)
        for fid, pid in changes.items():
            if fid in image_of:
                by_image[image_of[fid]][fid] = pid
        rewrite.push_to_stores(stores, by_image)
        self._rewrite(st, by_image, {})

    @staticmethod
    def _refresh(st: state.State, person_ids: Sequence[str]) -> None:
        """Centroid and cover of persons whose faces an edit changed."""
        for pid in person_ids:
            rows = st.cluster_faces(pid)
            if rows:
                centroid, cover = graph.centroid_and_cover(np.stack([v for _, v in rows]))
                st.set_centroid(pid, centroid, rows[cover][0], state.timestamp())

    def forget(self, person_id: str) -> list[str]:
        """Erase a person: its row (name, centroid), the persons merged into it, and its faces' embeddings
        and edges here. The caller erases the faces from Parquet and the stores; the next `update` clusters
        the faces that were linked to them again (their ids are kept as pending seeds until then).
        Returns the person ids erased."""
        with state.writing(self.db) as st:
            gone = st.erase(st.canonical(person_id))
        self.write_snapshot()
        return sorted(gone, key=person_number)

    def forget_images(self, image_keys: Sequence[str]) -> None:
        """The user's rules about faces of these photos go with them (`facepipe forget`)."""
        if self.db.exists():
            with state.writing(self.db) as st:
                st.forget_rules(image_keys)

    # -- clustering ------------------------------------------------------------------------------------------

    def update(self, stores: Sequence[PersonIdSink] = ()) -> UpdateReport:
        """Bring persons up to date with the faces Parquet; push changed person ids to Parquet and `stores`."""
        started = time.perf_counter()
        report = UpdateReport()
        with state.writing(self.db) as st:
            seen = self.face_files()
            known = st.files()
            changed = sorted(p for p, stat in seen.items() if (known[p][1] if p in known else None) != stat)
            vanished = sorted(p for p in known if p not in seen)

            # 1. Read what moved: the faces each touched image has now, and the person_id Parquet holds.
            now_faces, in_parquet, read_stats, boxes = self._read_changed(changed, known, report)
            for rel in vanished:
                now_faces.setdefault(known[rel][0], {})

            # 2. Apply the difference to the face table and the graph.
            seeds = self._apply(st, now_faces, boxes, report)

            # 3. Cluster again the components that changed; every other face keeps its person.
            before = st.person_of_faces()
            if seeds:
                comp, comp_edges = st.component(seeds)
                report.reclustered = len(comp)
                report.new_persons = identity.recluster(st, comp, comp_edges)
            after = st.person_of_faces()

            # 4. Push what changed to the stores and the Parquet files.
            image_of = st.image_of_faces()
            by_image = rewrite.person_id_changes(before, after, in_parquet, image_of)
            report.changed = sum(len(faces) for faces in by_image.values())
            rewrite.push_to_stores(stores, by_image)
            report.files_rewritten, report.retry = self._rewrite(st, by_image, read_stats)

            st.forget_files(vanished)
            report.faces = len(image_of)
            report.assigned = len(after)
            report.persons = len(set(after.values()))
        self.write_snapshot()
        report.seconds = time.perf_counter() - started
        return report

    def _read_changed(
        self, changed: Sequence[str], known: Mapping[str, tuple[str, Stat]], report: UpdateReport
    ) -> tuple[
        dict[str, dict[str, np.ndarray]], dict[str, dict[str, str | None]], dict[str, tuple[str, Stat]], dict[str, Box]
    ]:
        """From the files that moved: image_key -> face_id -> embedding, image_key -> face_id -> person_id
        as written, path -> (image_key, stat when read), and face_id -> box."""
        now_faces: dict[str, dict[str, np.ndarray]] = {}
        in_parquet: dict[str, dict[str, str | None]] = {}
        read_stats: dict[str, tuple[str, Stat]] = {}
        boxes: dict[str, Box] = {}
        for rel in changed:
            table, stat = rewrite.read_face_file(self.parquet, rel)
            if table is None:
                continue  # gone between listing and reading: it counts as vanished next time
            report.files_read += 1
            keys = set(table.column("image_key").to_pylist())
            if len(keys) == 1:
                key = keys.pop()
            else:
                key = known[rel][0] if rel in known else self.parquet.image_key_of_face_file(rel)
                if key is None:
                    continue  # an empty file under a hashed name, gone since: nothing to cluster
            read_stats[rel] = (key, stat)
            embeddings = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 128)
            ids = table.column("face_id").to_pylist()
            now_faces[key] = {fid: np.asarray(e, np.float32) for fid, e in zip(ids, embeddings, strict=True)}
            in_parquet[key] = dict(zip(ids, table.column("person_id").to_pylist(), strict=True))
            sides = [table.column(c).to_pylist() for c in ("top", "right", "bottom", "left")]
            boxes |= {fid: tuple(box) for fid, *box in zip(ids, *sides, strict=True)}
        return now_faces, in_parquet, read_stats, boxes

    @staticmethod
    def _apply(
        st: state.State, now_faces: dict[str, dict[str, np.ndarray]], boxes: Mapping[str, Box], report: UpdateReport
    ) -> set[int]:
        """Bring the face table and its edges to `now_faces` (consumed); returns the faces whose
        components must be clustered again."""
        seeds: set[int] = set()
        removed: set[int] = set()
        added: list[int] = []
        before = {f.row: f for f in st.faces_in("image_key", sorted(now_faces))}
        gone: dict[str, list[FaceAt]] = defaultdict(list)
        for row_id, fid, key, vector in st.faces_of_images(sorted(now_faces)):
            emb = now_faces[key].pop(fid, None)
            if fid in boxes:
                st.set_box(fid, boxes[fid])  # states made before boxes were kept get them here
            if emb is not None and np.array_equal(vector, emb):
                continue
            seeds |= st.unlink(row_id)
            if emb is None:
                st.delete_face(row_id)
                removed.add(row_id)
                gone[key].append(before[row_id])
            else:  # same face, new embedding (other settings): keep its row and cluster
                st.set_embedding(row_id, emb)
                added.append(row_id)
        seeds -= removed
        for key, faces in now_faces.items():
            for fid, emb in faces.items():
                box = boxes.get(fid)
                was = constraints.predecessor(box, gone[key])
                if was is not None:
                    gone[key].remove(was)
                added.append(st.add_face(fid, key, emb, box, was))
        report.added, report.removed = len(added), len(removed)
        if added:
            ids, keys, x = st.all_embeddings()
            for edges in graph.new_edges(ids, keys, x, added):
                st.add_edges(edges)
        seeds |= set(added)
        # Faces that were linked to a forgotten person: cluster their components again.
        seeds |= st.existing(st.pending_seeds())
        st.clear_pending_seeds()
        return seeds

    def _rewrite(
        self,
        st: state.State,
        by_image: Mapping[str, Mapping[str, str | None]],
        read_stats: Mapping[str, tuple[str, Stat]],
    ) -> tuple[int, list[str]]:
        written, retry, stats = rewrite.rewrite_person_ids(self.parquet, by_image, read_stats, st.files())
        st.record_files(stats)
        return written, retry

    def write_snapshot(self) -> None:
        """parquet/people.parquet: one row per person, for analytics next to the faces dataset."""
        rewrite.write_snapshot(self.list(), self.parquet, self.snapshot_path)
