"""`People`: the people of one data folder, as the CLI, the API, forget and the Dagster asset use them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from facepipe.people import graph, identity, rewrite, state
from facepipe.people.records import PeopleError, Person, PersonIdSink, Stat, UpdateReport, person_number
from facepipe.statedb import StateDB
from facepipe.stores.parquet import ParquetStore

SNAPSHOT_FILE = "people.parquet"

NAME_LENGTH = 200
"""Characters a name may have."""


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
            raise PeopleError(f"no person {person_id!r}: people have not been clustered yet")
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

    # -- naming, merging, forgetting -----------------------------------------------------------------------

    def name(self, person_id: str, name: str | None) -> Person:
        """Give a person a name (None or blank: remove it). Names survive re-clustering."""
        name = " ".join((name or "").split()) or None
        if name and len(name) > NAME_LENGTH:
            raise PeopleError(f"a name has at most {NAME_LENGTH} characters")
        with state.writing(self.db) as st:
            pid = st.canonical(person_id)
            st.set_name(pid, name)
        self.write_snapshot()
        return self.get(pid)

    def merge(self, keep: str, fold: str, stores: Sequence[PersonIdSink] = ()) -> tuple[Person, int]:
        """Fold person `fold` into `keep`: its faces take `keep`'s id in Parquet and the stores, now and
        after every later clustering. `keep` takes `fold`'s name if it has none. Returns (person, faces moved)."""
        with state.writing(self.db) as st:
            a, b = st.canonical(keep), st.canonical(fold)
            if a == b:
                raise PeopleError(f"{keep} and {fold} are already the same person ({a})")
            moved = st.fold(a, b)
            by_image: dict[str, dict[str, str | None]] = defaultdict(dict)
            for fid, key in moved:
                by_image[key][fid] = a
            rewrite.push_to_stores(stores, by_image)
            self._rewrite(st, by_image, {})
        self.write_snapshot()
        return self.get(a), len(moved)

    def forget(self, person_id: str) -> list[str]:
        """Erase a person: its row (name, centroid), the persons merged into it, and its faces' embeddings
        and edges here. The caller erases the faces from Parquet and the stores; the next `update` clusters
        the faces that were linked to them again (their ids are kept as pending seeds until then).
        Returns the person ids erased."""
        with state.writing(self.db) as st:
            gone = st.erase(st.canonical(person_id))
        self.write_snapshot()
        return sorted(gone, key=person_number)

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
            now_faces, in_parquet, read_stats = self._read_changed(changed, known, report)
            for rel in vanished:
                now_faces.setdefault(known[rel][0], {})

            # 2. Apply the difference to the face table and the graph.
            seeds = self._apply(st, now_faces, report)

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
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, str | None]], dict[str, tuple[str, Stat]]]:
        """From the files that moved: image_key -> face_id -> embedding, image_key -> face_id -> person_id
        as written, and path -> (image_key, stat when read)."""
        now_faces: dict[str, dict[str, np.ndarray]] = {}
        in_parquet: dict[str, dict[str, str | None]] = {}
        read_stats: dict[str, tuple[str, Stat]] = {}
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
        return now_faces, in_parquet, read_stats

    @staticmethod
    def _apply(st: state.State, now_faces: dict[str, dict[str, np.ndarray]], report: UpdateReport) -> set[int]:
        """Bring the face table and its edges to `now_faces` (consumed); returns the faces whose
        components must be clustered again."""
        seeds: set[int] = set()
        removed: set[int] = set()
        added: list[int] = []
        for row_id, fid, key, vector in st.faces_of_images(sorted(now_faces)):
            emb = now_faces[key].pop(fid, None)
            if emb is not None and np.array_equal(vector, emb):
                continue
            seeds |= st.unlink(row_id)
            if emb is None:
                st.delete_face(row_id)
                removed.add(row_id)
            else:  # same face, new embedding (other settings): keep its row and cluster
                st.set_embedding(row_id, emb)
                added.append(row_id)
        seeds -= removed
        for key, faces in now_faces.items():
            for fid, emb in faces.items():
                added.append(st.add_face(fid, key, emb))
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
