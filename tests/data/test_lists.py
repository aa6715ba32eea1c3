from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest

from scalevid.data.benchmark_lists import kinetics_file_name, ssv2_class_name
from scalevid.data.list_formats import detect_format, load_video_list
from scalevid.data.lists import DatasetError, DatasetFormatError, VideoItem


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def assert_format_error(spec: Path, file: Path, line: int | None, **kwargs: object) -> None:
    with pytest.raises(DatasetFormatError) as caught:
        load_video_list(spec, **kwargs)
    assert caught.value.path == file
    assert caught.value.line == line
    assert str(file) in str(caught.value)
    if line is not None:
        assert f":{line}:" in str(caught.value)


# --------------------------------------------------------------------------------------------
# csv "path label"
# --------------------------------------------------------------------------------------------


def test_csv_space_separated_int_labels(tmp_path: Path) -> None:
    spec = write(tmp_path / "train.csv", "a/x.mp4 0\n/abs/y.mp4 2\n\nmy video.mp4 1\n")
    videos = load_video_list(spec)
    assert videos.name == "train" and len(videos) == 3
    assert videos.items[0] == VideoItem(path=tmp_path / "a/x.mp4", label=0, video_id="a/x")
    assert videos.items[1].path == Path("/abs/y.mp4")
    assert videos.items[2].path == tmp_path / "my video.mp4"
    assert videos.class_names == ["0", "1", "2"]


def test_a_detected_format_is_said_in_one_line(tmp_path: Path, caplog) -> None:
    spec = write(tmp_path / "train.csv", "a/x.mp4 0\n")
    with caplog.at_level("INFO", logger="scalevid.data.list_formats"):
        load_video_list(spec)
        load_video_list(spec, format="csv")
    said = [r.getMessage() for r in caplog.records if "detected" in r.getMessage()]
    assert said == [f"{spec}: read as a csv list (detected; --format to choose)"]


def test_csv_comma_header_class_names_and_root(tmp_path: Path) -> None:
    spec = write(tmp_path / "list.csv", "path,label\nv1.avi,walk\nv2.avi,run\nv3.avi,walk\n")
    videos = load_video_list(spec, root=tmp_path / "videos")
    assert videos.class_names == ["run", "walk"]
    assert [item.label for item in videos] == [1, 0, 1]
    assert videos.items[0].path == tmp_path / "videos" / "v1.avi"
    assert videos.num_classes == 2


@pytest.mark.parametrize(
    ("text", "line"),
    [("a.mp4 0\nlonely_path\n", 2), ("a.mp4 0\nb.mp4 -3\n", 2), ("a.mp4 0\n b.mp4 ,\n", 2)],
)
def test_csv_malformed_line(tmp_path: Path, text: str, line: int) -> None:
    spec = write(tmp_path / "bad.csv", text)
    assert_format_error(spec, spec, line)


# --------------------------------------------------------------------------------------------
# Folder per class
# --------------------------------------------------------------------------------------------


def test_folder_per_class(tmp_path: Path) -> None:
    for rel in ("run/b.mp4", "run/a.avi", "walk/sub/c.webm", "walk/notes.txt"):
        write(tmp_path / "data" / rel, "")
    videos = load_video_list(tmp_path / "data")
    assert videos.class_names == ["run", "walk"]
    assert [(item.video_id, item.label) for item in videos] == [
        ("run/a", 0),
        ("run/b", 0),
        ("walk/sub/c", 1),
    ]


def test_folder_with_split_subfolders(tmp_path: Path) -> None:
    write(tmp_path / "data/train/jump/a.mp4", "")
    write(tmp_path / "data/val/jump/b.mp4", "")
    videos = load_video_list(tmp_path / "data", split="val", format="folder")
    assert [item.video_id for item in videos] == ["jump/b"]
    assert videos.name == "data-val"


# --------------------------------------------------------------------------------------------
# UCF101
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ucf_lists(tmp_path: Path) -> Path:
    folder = tmp_path / "ucfTrainTestlist"
    write(folder / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n")
    write(
        folder / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "HandstandPushups/v_HandStandPushups_g09_c01.avi 2\r\n",
    )
    write(folder / "testlist01.txt", "HandstandPushups/v_HandStandPushups_g01_c01.avi\n")
    write(folder / "trainlist02.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\n")
    return folder


def test_ucf101_train_and_test(ucf_lists: Path, tmp_path: Path) -> None:
    assert detect_format(ucf_lists) == "ucf101"
    train = load_video_list(ucf_lists, root=tmp_path / "UCF-101")
    assert train.class_names == ["ApplyEyeMakeup", "HandstandPushups"]
    assert train.name == "ucf101-train-fold1"
    assert [item.label for item in train] == [0, 1]
    assert train.items[0].path == tmp_path / "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert train.items[0].video_id == "v_ApplyEyeMakeup_g08_c01"
    test = load_video_list(ucf_lists, split="test")
    assert test.name == "ucf101-test-fold1"
    assert [(item.video_id, item.label) for item in test] == [("v_HandStandPushups_g01_c01", 1)]
    fold2 = load_video_list(ucf_lists / "trainlist02.txt", split="test")
    assert fold2.name == "ucf101-train-fold2" and len(fold2) == 1


def test_ucf101_malformed(ucf_lists: Path) -> None:
    bad = write(ucf_lists / "trainlist03.txt", "ApplyEyeMakeup/a.avi 1\nApplyEyeMakeup/b.avi\n")
    assert_format_error(ucf_lists, bad, 2, fold=3)
    bad = write(ucf_lists / "trainlist03.txt", "ApplyEyeMakeup/a.avi 7\n")
    assert_format_error(ucf_lists, bad, 1, fold=3)
    bad = write(ucf_lists / "testlist03.txt", "ApplyEyeMakeup/a.avi\nNoSuchClass/b.avi\n")
    assert_format_error(ucf_lists, bad, 2, fold=3, split="test")


# --------------------------------------------------------------------------------------------
# HMDB51
# --------------------------------------------------------------------------------------------


@pytest.fixture
def hmdb_splits(tmp_path: Path) -> Path:
    folder = tmp_path / "testTrainMulti_7030_splits"
    write(folder / "brush_hair_test_split1.txt", "a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    write(folder / "cartwheel_test_split1.txt", "d.avi 2\ne.avi 1\n")
    write(folder / "cartwheel_test_split2.txt", "d.avi 1\ne.avi 2\n")
    write(folder / "brush_hair_test_split2.txt", "a.avi 2\n")
    return folder


def test_hmdb51_splits(hmdb_splits: Path, tmp_path: Path) -> None:
    assert detect_format(hmdb_splits) == "hmdb51"
    train = load_video_list(hmdb_splits, root=tmp_path / "hmdb51")
    assert train.class_names == ["brush_hair", "cartwheel"]
    assert [(item.video_id, item.label) for item in train] == [("a", 0), ("e", 1)]
    assert train.items[0].path == tmp_path / "hmdb51/brush_hair/a.avi"
    test = load_video_list(hmdb_splits, split="test", fold=2)
    assert [(item.video_id, item.label) for item in test] == [("a", 0), ("e", 1)]
    assert test.name == "hmdb51-test-fold2"


def test_hmdb51_malformed(hmdb_splits: Path) -> None:
    bad = write(hmdb_splits / "cartwheel_test_split3.txt", "a.avi 1\nb.avi 5\n")
    assert_format_error(hmdb_splits, bad, 2, fold=3)
    bad.write_text("a.avi 1\nb.avi\n")
    assert_format_error(hmdb_splits, bad, 2, fold=3)


# --------------------------------------------------------------------------------------------
# Something-Something v2
# --------------------------------------------------------------------------------------------


@pytest.fixture
def ssv2_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ssv2"
    labels = {"Approaching something with your camera": "0", "Putting something on something": "1"}
    train = [
        {
            "id": "78687",
            "label": "putting a pen on a table",
            "template": "Putting [something] on [something]",
            "placeholders": ["a pen", "a table"],
        },
        {
            "id": "42326",
            "label": "approaching a cup with your camera",
            "template": "Approaching [something] with your camera",
            "placeholders": ["a cup"],
        },
    ]
    write(folder / "labels.json", json.dumps(labels))
    write(folder / "train.json", json.dumps(train))
    write(folder / "validation.json", json.dumps(train[:1]))
    return folder


def test_ssv2(ssv2_folder: Path, tmp_path: Path) -> None:
    assert detect_format(ssv2_folder) == "ssv2"
    train = load_video_list(ssv2_folder, root=tmp_path / "videos")
    assert train.class_names[1] == "Putting something on something"
    assert [(item.video_id, item.label) for item in train] == [("78687", 1), ("42326", 0)]
    assert train.items[0].path == tmp_path / "videos/78687.webm"
    val = load_video_list(ssv2_folder / "validation.json")
    assert len(val) == 1 and val.name == "ssv2-val"
    assert ssv2_class_name("Moving [something] and [something] closer") == (
        "Moving something and something closer"
    )


def test_ssv2_malformed(ssv2_folder: Path) -> None:
    bad = write(ssv2_folder / "train.json", json.dumps([{"id": "1", "template": "Dancing"}]))
    assert_format_error(ssv2_folder, bad, None)
    bad.write_text('[{"id": "1",\n "template": }]')
    assert_format_error(ssv2_folder, bad, 2)


# --------------------------------------------------------------------------------------------
# Kinetics
# --------------------------------------------------------------------------------------------

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


@pytest.fixture
def kinetics_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "kinetics400"
    write(
        folder / "train.csv",
        KINETICS_HEADER
        + "abseiling,--07WQ2iBlw,1,11,train\n"
        + '"air drumming",-0B5Np6wqGI,14,24,train\n',
    )
    write(folder / "validate.csv", KINETICS_HEADER + "air drumming,abcdefghijk,30,40,val\n")
    write(folder / "test.csv", "youtube_id,time_start,time_end,split\nzzzzzzzzzzz,0,10,test\n")
    return folder


def test_kinetics_layouts(kinetics_folder: Path, tmp_path: Path) -> None:
    assert detect_format(kinetics_folder) == "kinetics"
    assert kinetics_file_name("--07WQ2iBlw", 1, 11) == "--07WQ2iBlw_000001_000011.mp4"
    videos = tmp_path / "videos"
    flat = load_video_list(kinetics_folder, root=videos)
    assert flat.class_names == ["abseiling", "air drumming"]
    assert flat.items[1].path == videos / "-0B5Np6wqGI_000014_000024.mp4"
    assert flat.items[1].label == 1 and flat.items[1].video_id == "-0B5Np6wqGI_000014_000024"
    (videos / "train").mkdir(parents=True)
    by_split = load_video_list(kinetics_folder, root=videos)
    assert by_split.items[0].path == videos / "train/--07WQ2iBlw_000001_000011.mp4"
    (videos / "train/air_drumming").mkdir()
    by_class = load_video_list(kinetics_folder, root=videos)
    assert by_class.items[1].path == videos / "train/air_drumming/-0B5Np6wqGI_000014_000024.mp4"


def test_kinetics_val_uses_train_classes_and_test_has_no_label(kinetics_folder: Path) -> None:
    val = load_video_list(kinetics_folder, split="val")
    assert val.class_names == ["abseiling", "air drumming"]
    assert [item.label for item in val] == [1]
    test = load_video_list(kinetics_folder / "test.csv", split="test")
    assert [item.label for item in test] == [-1]


def test_kinetics_malformed(kinetics_folder: Path) -> None:
    bad = write(kinetics_folder / "train.csv", KINETICS_HEADER + "abseiling,x,1,11,train\ny,2\n")
    assert_format_error(kinetics_folder, bad, 3)
    bad.write_text(KINETICS_HEADER + "abseiling,x,one,11,train\n")
    assert_format_error(kinetics_folder, bad, 2)


# --------------------------------------------------------------------------------------------
# LVU
# --------------------------------------------------------------------------------------------


def test_lvu_classification(tmp_path: Path) -> None:
    relationship = write(
        tmp_path / "lvu_1.0/relationship/train.csv",
        "relationship x youtube_id imdb_id\n2 a Rz8bxpPlRCY tt0120338\n0 b mG7s4JWZa9U tt0110912\n",
    )
    assert detect_format(relationship) == "lvu"
    assert detect_format(relationship.parent) == "lvu"
    videos = load_video_list(relationship, root=tmp_path / "videos")
    assert [(item.video_id, item.label) for item in videos] == [
        ("Rz8bxpPlRCY", 2),
        ("mG7s4JWZa9U", 0),
    ]
    assert videos.items[0].path == tmp_path / "videos/Rz8bxpPlRCY.mp4"
    assert videos.task == "classification" and videos.class_names == ["0", "1", "2"]


def test_lvu_regression_targets(tmp_path: Path) -> None:
    write(tmp_path / "like_ratio/train.csv", "like dislike youtube_id imdb_id\n30 10 abc tt1\n")
    write(tmp_path / "view_count/val.csv", "views youtube_id imdb_id\n1000 def tt2\n")
    like = load_video_list(tmp_path / "like_ratio", split="train")
    assert like.task == "regression" and like.name == "lvu-like_ratio-train"
    assert [(item.video_id, item.label) for item in like] == [("abc", -1)]
    assert like.items[0].target == pytest.approx(7.5)
    view = load_video_list(tmp_path / "view_count", split="val")
    assert view.items[0].video_id == "def"
    assert view.items[0].target == pytest.approx(math.log(1000))


def test_lvu_malformed(tmp_path: Path) -> None:
    bad = write(tmp_path / "scene/val.csv", "scene x youtube_id imdb_id\n1 x a tt1\ntwo x b tt2\n")
    assert_format_error(bad, bad, 3)
    bad = write(tmp_path / "view_count/val.csv", "views youtube_id imdb_id\n1.0 a\n")
    assert_format_error(bad, bad, 2)
    bad = write(tmp_path / "like_ratio/val.csv", "h\n1 2 a tt1\n0 0 b tt2\n")
    assert_format_error(bad, bad, 3)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def test_format_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(DatasetFormatError("a.csv", 3, "bad")))
    assert (error.path, error.line, str(error)) == (Path("a.csv"), 3, "a.csv:3: bad")


def test_missing_spec_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_video_list(tmp_path / "nothing.csv")


def test_auto_detects_plain_csv(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path / "list.txt", "a.mp4 1\n")) == "csv"


def test_csv_takes_class_names_from_classes_txt(tmp_path):
    from scalevid.data.lists import parse_csv

    (tmp_path / "train.csv").write_text("a.mp4 0\nb.mp4 1\nc.mp4 -1\n")
    assert parse_csv(tmp_path / "train.csv").class_names == ["0", "1"]
    (tmp_path / "classes.txt").write_text("walk\nrun\njump\n")
    listing = parse_csv(tmp_path / "train.csv")
    assert listing.class_names == ["walk", "run", "jump"]
    assert [item.label for item in listing.items] == [0, 1, -1]
