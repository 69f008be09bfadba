"""Persons: every face clustered into people, with ids, names and merges that survive re-clustering.

Clustering is Chinese whispers on the graph of faces closer than `THRESHOLD` (0.5, Euclidean)
with cannot-links inside it (`graph.constrained_whispers`): a face never joins a cluster that holds
a face of its own photo, or a person the user said it is not or keeps apart from its own; faces the
user put in a person are a fixed cluster (must-link). The user's decisions are `constraints` rules
kept by photo and box, so they survive a re-index and another detector. With the default YuNet
detector dlib's whispers (no same-photo edges, but chains through other faces) put 6 same-photo
pairs into persons; the constrained one none, at pairwise F1 0.99. Earlier measurements with
`benchmarks/people_clustering.py` on the 86 HOG faces of the sample photos (knn `train/`,
the face_recognition photos of the same people, cocoindex and dlib_faces as distractors):

    method                         pairwise P    R     F1   same-photo pairs joined
    chinese whispers 0.5, apart          0.99  0.99  0.99      0
    chinese whispers 0.5                 0.62  0.99  0.76     96
    agglomerative complete 0.5           0.93  0.99  0.96     13
    agglomerative average 0.6            0.49  1.00  0.66    169
    dbscan eps 0.6 (min 2 or 3)          0.17  1.00  0.29    428

Every method keeps the labelled people apart (their inter-person distances are >= 0.76); they
differ on distractors: at 0.6, and without the same-photo rule, the 29 small monochrome faces of
the Solvay photo chain into one "person". CNN faces give the same ranking (F1 0.98 for the
choice). A face that joins no one (a singleton) stays unassigned: `person_id` null.

Ids are `p1`, `p2`, ... and never reused. Between runs only what changed is recomputed: the
faces of Parquet files whose size or mtime moved are re-read, their edges recomputed against
every face, and Chinese whispers re-run on the connected components they touch. New clusters
inherit the id of the previous person they share most faces with (named persons first), else
of a person that lost all its faces and whose centroid is within `RECLAIM` (photos re-indexed
with other settings get new face ids), else a new id. A merge (B folds into A) is kept as
"B's clusters belong to A", so it holds whatever the clustering does next.

State lives in `<data folder>/people.sqlite` (tables `persons`, `faces`, `edges`, `files`;
view `people`), and a snapshot of the persons goes to `<data folder>/parquet/people.parquet`
for analytics. No Dagster here: the `people` asset and the CLI are thin shells over `People`.

Modules: `records` (Person, UpdateReport, PeopleError), `state` (the SQLite state, with the edit
log), `graph` (distances, edges, constrained Chinese whispers: pure numpy), `constraints` (the
user's rules as cannot/must-links), `identity` (which id a cluster keeps), `review` (suggestions,
evaluation), `rewrite` (person ids back into the faces Parquet and the stores), `library` (the
`People` facade: clustering and every edit).
"""

from facepipe.people.graph import THRESHOLD
from facepipe.people.identity import RECLAIM
from facepipe.people.library import People
from facepipe.people.records import PeopleError, Person, PersonIdSink, UpdateReport, people_json

__all__ = ["RECLAIM", "THRESHOLD", "People", "PeopleError", "Person", "PersonIdSink", "UpdateReport", "people_json"]
