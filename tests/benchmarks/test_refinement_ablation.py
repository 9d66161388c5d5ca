"""The amortise-then-refine ablation runs its four variants end to end in quick mode."""

from benchmarks import refinement_ablation


def test_quick_mode_scores_every_variant(tmp_path, mnist_root):
    result = refinement_ablation.main(
        ["--data-root", str(mnist_root), "--quick", "--jobs", "1", "--json", str(tmp_path / "ablation.json")]
    )
    assert result["notes"] == []
    assert [row["variant"] for row in result["rows"]] == list(refinement_ablation.VARIANTS)
    for row in result["rows"]:
        assert row["gibbs"] <= row["policy"] + 1e-6  # refinement never makes the policy's program worse
        assert row["iterations"] >= 1
