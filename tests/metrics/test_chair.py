"""Tests of lookright.metrics.chair (CHAIR, Rohrbach et al. 2018)."""

from __future__ import annotations

import pytest

from lookright.metrics.chair import (
    SHAPES_VOCABULARY,
    ChairVocabulary,
    chair_caption,
    chair_metrics,
    coco_vocabulary,
    extract_mentions,
    extract_objects,
    get_singulariser,
    singularise,
    wordnet_singulariser,
)

COCO_80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]  # fmt: skip


@pytest.fixture(scope="module")
def coco() -> ChairVocabulary:
    return coco_vocabulary()


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("boxes", "box"), ("circles", "circle"), ("stars", "star"), ("buses", "bus"),
        ("mice", "mouse"), ("people", "person"), ("bus", "bus"), ("glasses", "glass"),
        ("scissors", "scissors"), ("ties", "tie"), ("cookies", "cookie"), ("puppies", "puppy"),
        ("knives", "knife"), ("women", "woman"), ("children", "child"), ("sheep", "sheep"),
        ("dishes", "dish"), ("benches", "bench"), ("horses", "horse"), ("skis", "ski"),
        ("tennis", "tennis"), ("cross", "cross"), ("crosses", "cross"), ("is", "is"),
        ("giraffes", "giraffe"), ("policemen", "policeman"), ("gloves", "glove"),
        ("diamonds", "diamond"), ("squares", "square"), ("triangles", "triangle"),
    ],
)  # fmt: skip
def test_singularise(word, expected):
    assert singularise(word) == expected


def test_extract_shapes_plurals_and_duplicates():
    caption = "Two red circles and a blue square, next to another circle."
    assert extract_objects(caption, SHAPES_VOCABULARY) == ["circle", "square"]
    assert [m.cls for m in extract_mentions(caption, SHAPES_VOCABULARY)] == [
        "circle",
        "square",
        "circle",
    ]
    assert extract_objects("Crosses and diamonds, a plus sign.", SHAPES_VOCABULARY) == [
        "cross",
        "diamond",
    ]


def test_coco_multiword_and_special_rules(coco):
    assert extract_objects("A man sits on the toilet seat.", coco) == ["person", "toilet"]
    assert extract_objects("A toilet next to a seat.", coco) == ["toilet"]  # seat suppressed
    assert extract_objects("A seat.", coco) == ["chair"]
    assert extract_objects("A dog eating a hot dog.", coco) == ["dog", "hot dog"]
    assert extract_objects("A teddy bear and a brown bear.", coco) == ["teddy bear", "bear"]
    assert extract_objects("A baby elephant and an adult zebra.", coco) == ["elephant", "zebra"]
    assert extract_objects("Passengers board a passenger train.", coco) == ["person", "train"]
    assert extract_objects("Skiers on the ski slopes holding skis.", coco) == ["person", "skis"]
    assert extract_objects("Two hot-dogs, some sports balls and wine glasses.", coco) == [
        "hot dog",
        "sports ball",
        "wine glass",
    ]
    assert extract_objects("A microwave oven and a laptop computer.", coco) == [
        "microwave",
        "laptop",
    ]


def test_coco_vocabulary_covers_80_classes(coco):
    assert sorted(coco.classes) == sorted(COCO_80)
    for name in COCO_80:
        assert extract_objects(f"There is a {name} here.", coco) == [name], name


def test_chair_metrics_hand_computed():
    captions = [
        "A red circle and a blue square.",  # 7 words, no hallucination
        "A star, a star and a triangle.",  # 7 words, triangle hallucinated
        "",  # empty caption
        "A blank image.",  # 3 words, no objects
    ]
    gt = [["circle", "square"], ["star"], ["circle"], []]
    m = chair_metrics(captions, gt, SHAPES_VOCABULARY)
    assert m["n_captions"] == 4 and m["n_hallucinated_captions"] == 1
    assert m["chair_s"] == pytest.approx(0.25)
    assert m["n_mentions"] == 5 and m["n_hallucinated_mentions"] == 1
    assert m["chair_i"] == pytest.approx(0.2)
    assert m["n_gt_objects"] == 4 and m["n_covered"] == 3
    assert m["recall"] == pytest.approx(0.75)
    assert m["mean_length"] == pytest.approx(17 / 4)
    unique = chair_metrics(captions, gt, SHAPES_VOCABULARY, unique_mentions=True)
    assert unique["n_mentions"] == 4 and unique["chair_i"] == pytest.approx(0.25)
    assert unique["chair_s"] == pytest.approx(0.25)


def test_chair_no_mentions_and_no_captions():
    m = chair_metrics(["nothing to see here"], [["circle"]], SHAPES_VOCABULARY)
    assert m["n_mentions"] == 0 and m["chair_i"] == 0.0 and m["chair_s"] == 0.0
    assert m["recall"] == 0.0 and m["mean_length"] == 4.0
    empty = chair_metrics([], [], SHAPES_VOCABULARY)
    assert empty["n_captions"] == 0
    assert empty["chair_s"] == empty["chair_i"] == empty["recall"] == empty["mean_length"] == 0.0
    with pytest.raises(ValueError):
        chair_metrics(["a"], [], SHAPES_VOCABULARY)


def test_chair_caption_gt_synonyms_and_plurals(coco):
    result = chair_caption("A kitten on a sofa next to a cat.", ["cats", "couch"], coco)
    assert result.mentions == ("cat", "couch", "cat")
    assert result.hallucinated == () and result.covered == ("cat", "couch")
    result = chair_caption("A man riding a bike.", ["people"], coco)
    assert result.hallucinated == ("bicycle",) and result.n_gt == 1


def test_vocabulary_conflict_rejected():
    with pytest.raises(ValueError):
        ChairVocabulary.from_synonyms({"a": ["thing"], "b": ["things"]})


def test_custom_singulariser_is_used():
    vocab = ChairVocabulary.from_synonyms({"circle": []}, singulariser=lambda w: w)
    assert extract_objects("circles and a circle", vocab) == ["circle"]
    assert len(extract_mentions("circles and a circle", vocab)) == 1


def test_wordnet_optional():
    assert get_singulariser("rule") is singularise
    if wordnet_singulariser() is None:
        assert get_singulariser("auto") is singularise
        with pytest.raises(RuntimeError):
            get_singulariser("wordnet")
    else:
        assert get_singulariser("wordnet")("dogs") == "dog"
    with pytest.raises(ValueError):
        get_singulariser("stem")
