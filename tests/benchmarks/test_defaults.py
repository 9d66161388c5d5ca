"""benchmarks.defaults: the data-chosen settings and their one-change variants, scored."""

import json

from benchmarks import defaults


def test_the_chosen_defaults_and_their_variants_are_scored(colour_folder, tmp_path, one_torch_thread):
    folder = colour_folder["dataset"]
    argv = ["--dataset", folder, "--split", "all[:100]", "--eval-split", "all[100:]", "--steps", "3"]
    result = defaults.main([*argv, "--json", str(tmp_path / "defaults.json")])
    rows = result["rows"]
    chosen = rows[0]
    assert chosen["variant"] == "chosen from the data" and chosen["background"] == "border"
    variants = {row["variant"] for row in rows[1:]}
    assert "background black" in variants and "half-canvas R" in variants
    assert {row["patch_size"] for row in rows} > {chosen["patch_size"]}  # neighbouring sizes were tried
    assert all(row["sse"] > 0 for row in rows)
    assert json.loads((tmp_path / "defaults.json").read_text())["rows"] == rows


def test_shapes_has_only_its_ground_truth(tmp_path, one_torch_thread):
    result = defaults.main(["--steps", "4", "--eval-images", "16", "--split", "train[:300]"])
    assert [row["variant"] for row in result["rows"]] == ["chosen from the data"]
    assert result["rows"][0]["background"] == "black"
