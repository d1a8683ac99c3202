"""The model registry: family name -> Family. One literal dict; the name is the same string as the
module, the Kedro namespace, the parameter key and the leaderboard row."""

from __future__ import annotations

from recforge.models.cf import bpr, item_knn, mf, popularity, random
from recforge.models.cf import cdae
from recforge.models.cf import rbm
from recforge.models.cf import sdae
from recforge.models.cf import gmf, mlp, neumf
from recforge.models.cf import youtube_candidates
from recforge.models.cf import als
from recforge.models.sequence import cooccurrence, sknn
from recforge.models.sequence import cnn3d, narm, sasrec, tcn
from recforge.models.sequence import contextual_rnn, gru4rec, hrnn, lstm
from recforge.models.sequence import prod2vec_topk
from recforge.models.features import deep_regression, deepfm, fm, lr, neural_mf_v1, neural_mf_v2, nfm, wide_deep
from recforge.models.features import youtube_ranking
from recforge.models.content import vbpr
from recforge.models.content import hybrid
from recforge.models.content import tag_attention_cnn
from recforge.models.content import deep_content_audio
from recforge.models.content import content2vec
from recforge.models.content import cdssm, mv_dnn, text_cnn
from recforge.models.base import Family

FAMILIES: dict[str, Family] = {
    "random": random.FAMILY,
    "popularity": popularity.FAMILY,
    "item_knn": item_knn.FAMILY,
    "mf": mf.FAMILY,
    "bpr": bpr.FAMILY,
    "cdae": cdae.FAMILY,
    "sdae": sdae.FAMILY,
    "rbm": rbm.FAMILY,
    "gmf": gmf.FAMILY,
    "mlp": mlp.FAMILY,
    "neumf": neumf.FAMILY,
    "youtube_candidates": youtube_candidates.FAMILY,
    "als": als.FAMILY,
    "sknn": sknn.FAMILY,
    "cooccurrence": cooccurrence.FAMILY,
    "tcn": tcn.FAMILY,
    "cnn3d": cnn3d.FAMILY,
    "narm": narm.FAMILY,
    "sasrec": sasrec.FAMILY,
    "gru4rec": gru4rec.FAMILY,
    "contextual_rnn": contextual_rnn.FAMILY,
    "hrnn": hrnn.FAMILY,
    "lstm": lstm.FAMILY,
    "prod2vec_topk": prod2vec_topk.FAMILY,
    "lr": lr.FAMILY,
    "fm": fm.FAMILY,
    "nfm": nfm.FAMILY,
    "wide_deep": wide_deep.FAMILY,
    "deepfm": deepfm.FAMILY,
    "youtube_ranking": youtube_ranking.FAMILY,
    "deep_regression": deep_regression.FAMILY,
    "neural_mf_v1": neural_mf_v1.FAMILY,
    "neural_mf_v2": neural_mf_v2.FAMILY,
    "vbpr": vbpr.FAMILY,
    "hybrid": hybrid.FAMILY,
    "tag_attention_cnn": tag_attention_cnn.FAMILY,
    "deep_content_audio": deep_content_audio.FAMILY,
    "content2vec": content2vec.FAMILY,
    "text_cnn": text_cnn.FAMILY,
    "cdssm": cdssm.FAMILY,
    "mv_dnn": mv_dnn.FAMILY,
}


def get_family(name: str) -> Family:
    """The registered family `name`; an unknown name lists the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; registered: {sorted(FAMILIES)}") from None
