"""Prompt-set curation (Kimi k1.5 §2.2): every rule on real public items (GSM8K, MATH-500, AQuA) with cases that must
be kept, the model steps against a hand computation, the dataset and files `curate` writes, and `trl-kimi curate`."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from tests.utils import SHARED_DATA, eos_prone_model
from trl_kimi.cli import main as cli_main
from trl_kimi.curation import (
    CurationConfig,
    answer_only_prompt,
    curate,
    estimate_pass_rates,
    eval_overlap,
    find_duplicates,
    find_guessable,
    hackable_format,
    prompt_text,
)
from trl_kimi.generation import sample_completions
from trl_kimi.prompts import make_prompt_dataset
from trl_kimi.tasks import arithmetic


DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not (DATA / "math500").is_dir(), reason="needs ../shared/data (public benchmarks)")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------- formats
@needs_data
def test_math500_lettered_and_listed_choices_are_exactly_the_multiple_choice_rows():
    rows = {r["unique_id"]: r for r in read_jsonl(DATA / "math500/test.jsonl")}
    flagged = {uid: hackable_format(r["problem"], r["answer"]) for uid, r in rows.items()}
    flagged = {uid: reason for uid, reason in flagged.items() if reason}
    # "(A) Line (B) Circle ... Enter the letter": answers \text{(C)}, \text{(E)}; \textbf{(A)} equations: \text{(B)};
    # a word picked from a list in the problem: "north, south, east or west", "odd, even, or neither", "parabola,
    # circle, ellipse, ..., or empty".
    expected_answers = ["\\text{(B)}", "\\text{(C)}", "\\text{(E)}", "\\text{east}", "\\text{ellipse}", "\\text{even}"]
    assert sorted(rows[uid]["answer"] for uid in flagged) == expected_answers
    assert set(flagged.values()) == {"multiple_choice"}
    kept = {r["answer"]: r["problem"] for uid, r in rows.items() if uid not in flagged}
    # Must be kept: names to work out from a graph or a computation (no option list), "is it true that ..." in a
    # question with a numeric answer, "no" inside a sentence, Asymptote code with dot(A); dot(B).
    for answer in ("\\text{Evelyn}", "\\text{Navin}", "x \\in [-2,7]", "(-2,1)", "15", "80", "144", "29"):
        assert answer in kept, answer


@needs_data
def test_gsm8k_is_kept_whole_including_show_that_proof_and_true_false_in_the_story():
    rows = read_jsonl(DATA / "gsm8k/train.jsonl") + read_jsonl(DATA / "gsm8k/test.jsonl")
    assert [r["question"][:60] for r in rows if hackable_format(r["question"], r["answer"])] == []
    stories = {
        "Their results show that the size doubled": None,  # "show that" inside a sentence is not a proof
        "2 hours to proof": None,  # bread dough
        "more free response than true/false": None,  # a count of true/false questions, answer 6
        "She watched a show that was 30 minutes long": None,
    }
    for fragment in stories:
        assert any(fragment in r["question"] for r in rows), fragment


@needs_data
def test_aqua_is_multiple_choice_by_its_letter_answer_or_its_listed_options():
    rows = read_jsonl(DATA / "aqua/test.json")
    assert len(rows) == 254
    assert {hackable_format(r["question"], r["correct"]) for r in rows} == {"multiple_choice"}
    # the options written into the problem, one per line, as a prompt would show them; whatever the gold looks like
    with_options = [r["question"] + "\n" + "\n".join(r["options"]) for r in rows]
    assert {hackable_format(p, "42") for p in with_options} == {"multiple_choice"}
    # the question alone with the option's text as the gold answer is a free-response problem: kept
    # ("If that projection were to come true, ..." must not read as true/false)
    free = [hackable_format(r["question"], r["options"]["ABCDE".index(r["correct"])][2:]) for r in rows]
    assert set(free) == {None}


@pytest.mark.parametrize(
    "problem, answer, expected",
    [
        # Constructed in the style of competition items (the local sets hold no true/false, yes/no or proof item)
        ("True or false: every prime greater than 2 is odd.", "True", "true_false"),
        ("Decide whether 91 is prime (true/false).", "false", "true_false"),
        ("Is 2^{31} - 1 prime? Answer yes or no.", "Yes", "yes_no"),
        ('Can a triangle have two right angles? Enter "yes" or "no".', "\\text{no}", "yes_no"),
        ("Prove that there are infinitely many primes.", "", "no_answer"),
        ("Prove that $n^2 + n$ is even for every integer $n$.", "n^2 + n = n(n + 1)", "proof"),
        ("Let $x > 0$. Show that $x + 1/x \\ge 2$.", "2", "proof"),
        ("Which is larger? (A) $2^{10}$ (B) $10^3$", "A", "multiple_choice"),
        # kept
        ("The study's records show that 12 of 30 mice survived. What fraction died?", "\\frac{3}{5}", None),
        ("For how many integers $n$ is it true that $n^2 < 10$?", "7", None),
        ("Compute $(a - b)(a + b)$ when $a = 3$ and $b = 2$.", "5", None),
        ("Let $f(A) = 2A$ and $g(B) = B + 1$. Find $f(g(1))$.", "4", None),
        ("Which of $x = 1$ or $x = 2$ satisfies $x^2 = 4$?", "2", None),  # numeric picks are not word options
    ],
)
def test_hackable_format_rules(problem, answer, expected):
    assert hackable_format(problem, answer) == expected


def test_prompt_text_drops_the_step_by_step_instruction_and_reads_the_last_user_turn():
    rows = Dataset.from_dict({"question": ["How many eggs?"], "answer": ["#### 3"]})
    chat = make_prompt_dataset(rows, "gsm8k", conversational=True, system_prompt="Be brief.")[0]["prompt"]
    assert prompt_text(chat) == "How many eggs?"
    assert prompt_text(make_prompt_dataset(rows, "gsm8k", conversational=False)[0]["prompt"]) == "How many eggs?"


# ---------------------------------------------------------------------------------------------------- duplicates
@needs_data
def test_duplicates_on_gsm8k_items():
    questions = [r["question"] for r in read_jsonl(DATA / "gsm8k/train.jsonl")]
    # The whole train split: 3 near duplicates at 0.8, each a real template twin (Josie / Amanda received $50 ...)
    reasons = find_duplicates(questions)
    near = [i for i, r in enumerate(reasons) if r]
    assert [reasons[i] for i in near] == ["near_duplicate"] * 3
    assert any(questions[i].startswith("Amanda received $50 as a gift") for i in near)
    assert any(q.startswith("Josie received $50 as a gift") for q in questions)
    first, second = questions[0], questions[1]
    texts = [
        first,
        "  " + first.upper() + " ",
        second,
        second.replace("50 minutes", "55 minutes"),
        first.replace("Natalia", "Nat"),
    ]
    # exact up to case/spacing; one number changed; a name shortened; each against the kept first copy
    assert find_duplicates(texts) == [None, "duplicate", None, "near_duplicate", "near_duplicate"]
    assert find_duplicates(texts, near_threshold=None) == [None, "duplicate", None, None, None]
    assert find_duplicates(texts, near_threshold=1.0) == [None, "duplicate", None, None, None]
    with pytest.raises(ValueError, match="near_threshold must be in"):
        find_duplicates(texts, near_threshold=0)


@needs_data
def test_eval_overlap_on_gsm8k_test_items():
    test = [r["question"] for r in read_jsonl(DATA / "gsm8k/test.jsonl")]
    janet = test[0]  # "Janet's ducks lay 16 eggs per day. ..."
    rephrased_tail = "A farmer's note: " + " ".join(janet.split()[-20:])  # shares its last 20 words
    natalia = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    candidates = [janet, rephrased_tail, "How many eggs?", natalia]
    assert eval_overlap(candidates, test) == [True, True, True, False]  # a short text inside an eval text overlaps
    assert eval_overlap(candidates, test, ngram_size=30) == [True, False, True, False]
    # The whole train split against the test split: 4 train problems share a 13-gram with a test problem, e.g. a
    # template twin of test's "Max bought stamps at the post office. Some of the stamps had a snowflake design, ..."
    train = [r["question"] for r in read_jsonl(DATA / "gsm8k/train.jsonl")]
    flagged = [q for q, hit in zip(train, eval_overlap(train, test)) if hit]
    assert len(flagged) == 4
    assert any(
        q.startswith("Bella bought stamps at the post office. Some of the stamps had a snowflake") for q in flagged
    )


# ---------------------------------------------------------------------------------------------------- model steps
def first_digit_reward(completions, answer, **kwargs):
    """1.0 when the completion's first character is the gold answer's first digit: guessable by chance."""
    return [float(c[:1] == a[:1]) for c, a in zip(completions, answer)]


def test_answer_only_prompt_rewrites_a_copy():
    chat = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": "2 + 2?\n\nPlease reason step by step, and put your final answer within \\boxed{}.",
        },
    ]
    out = answer_only_prompt(chat, "Answer only.")
    assert out == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?\n\nAnswer only."}]
    assert chat[1]["content"].endswith("\\boxed{}.")  # the caller's prompt is unchanged
    assert answer_only_prompt("a3b5=", "") == "a3b5="


def test_find_guessable_is_any_correct_try_within_the_cap():
    tokenizer = arithmetic.make_tokenizer()
    model = eos_prone_model(tokenizer, p_eos=0.5)
    data = arithmetic.make_rl_dataset(12, seed=0, max_terms=3)
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    guessed = find_guessable(model, tokenizer, data, first_digit_reward, num_tries=3, max_new_tokens=2, instruction="")
    assert torch.equal(torch.random.get_rng_state(), before)
    # by hand: the same samples (seed 0); a try counts when it finished (EOS within 2 tokens) and its first character
    # is the answer's first digit
    groups = sample_completions(model, tokenizer, data["prompt"], 3, max_new_tokens=2, seed=0, top_k=0)
    expected = [any(c.finished and c.text[:1] == a[:1] for c in g) for g, a in zip(groups, data["answer"])]
    assert guessed == expected
    assert 0 < sum(guessed) < len(guessed)  # both outcomes occur
    assert any(c.text[:1] == a[:1] and not c.finished for g, a in zip(groups, data["answer"]) for c in g)
    with pytest.raises(ValueError, match="num_tries must be >= 1"):
        find_guessable(model, tokenizer, data, first_digit_reward, num_tries=0)


def test_estimate_pass_rates_is_a_seeded_fraction_and_leaves_the_global_rng_alone():
    tokenizer = arithmetic.make_tokenizer()
    model = eos_prone_model(tokenizer, p_eos=0.5)  # half the samples stop within 4 tokens, half are truncated
    data = arithmetic.make_rl_dataset(4, seed=0, max_terms=3)

    def first_char_is_digit_reward(completions, **kwargs):
        return [float(c[:1].isdigit()) for c in completions]

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    out = estimate_pass_rates(model, tokenizer, data, first_char_is_digit_reward, num_samples=8, max_new_tokens=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    again = estimate_pass_rates(model, tokenizer, data, first_char_is_digit_reward, num_samples=8, max_new_tokens=4)
    rates = out["pass_rate"]
    assert rates == again["pass_rate"]
    # the package's scoring rule, by hand on the same samples: a truncated sample fails without being scored
    groups = sample_completions(model, tokenizer, data["prompt"], 8, max_new_tokens=4, seed=0)
    expected = [sum(c.finished and c.text[:1].isdigit() for c in group) / 8 for group in groups]
    assert rates == expected
    assert 0 < sum(c.finished for group in groups for c in group) < 32  # both kinds occur
    assert any(c.text[:1].isdigit() and not c.finished for group in groups for c in group)  # one the rule fails

    def undecided_reward(completions, **kwargs):
        return [None] * len(completions)

    # None ("not applicable") counts as a failure, as everywhere in the package (and in TRL training with one reward)
    assert estimate_pass_rates(model, tokenizer, data, undecided_reward, 2, max_new_tokens=2)["pass_rate"] == [0.0] * 4
    assert out["prompt"] == data["prompt"]


# ---------------------------------------------------------------------------------------------------- curate
@needs_data
def test_curate_drops_by_the_first_rule_and_labels_the_rest(tmp_path):
    gsm8k = read_jsonl(DATA / "gsm8k/train.jsonl")[:6]
    math500 = [r for r in read_jsonl(DATA / "math500/test.jsonl") if r["answer"] == "\\text{(C)}"]
    aqua = read_jsonl(DATA / "aqua/test.json")[0]
    eval_question = read_jsonl(DATA / "gsm8k/test.jsonl")[0]["question"]
    problems = [r["question"] for r in gsm8k] + [math500[0]["problem"], aqua["question"], gsm8k[2]["question"]]
    problems += [eval_question]
    answers = [r["answer"] for r in gsm8k] + [math500[0]["answer"], aqua["correct"], gsm8k[2]["answer"]]
    answers += ["#### 18"]
    rows = Dataset.from_dict({"question": problems, "answer": answers})
    train = make_prompt_dataset(rows, "gsm8k", conversational=False)
    evaluation = make_prompt_dataset(
        Dataset.from_dict({"question": [eval_question], "answer": ["18"]}), "gsm8k", False
    )
    original = train.to_list()

    tokenizer = arithmetic.make_tokenizer()  # characters outside its alphabet are read as padding: fine for a test
    model = eos_prone_model(tokenizer, p_eos=0.5)

    def stop_at_once_reward(completions, solution, **kwargs):
        # stands in for a verifier: an answer that stops at once (EOS first, about half the samples) is "right"
        return [float(c == "") for c, s in zip(completions, solution, strict=True)]

    config = CurationConfig(num_guess_tries=1, guess_max_new_tokens=2, num_samples=4, max_new_tokens=3, seed=1)
    result = curate(train, model, tokenizer, stop_at_once_reward, config, eval_dataset=evaluation)
    reasons = list(result.dataset["drop_reason"])
    assert reasons[6:] == ["multiple_choice", "multiple_choice", "duplicate", "eval_overlap"]
    assert train.to_list() == original  # the caller's dataset is unchanged

    # the model steps ran on the 6 GSM8K rows only, in that order: guessable first, then pass rates on the rest
    candidates = train.select(range(6))
    guessed = find_guessable(model, tokenizer, candidates, stop_at_once_reward, 1, 2, config.guess_instruction, seed=1)
    assert reasons[:6] == ["guessable" if g else None for g in guessed]
    assert 0 < sum(guessed) < 6  # both outcomes occur
    alive = [i for i in range(6) if not guessed[i]]
    rates = estimate_pass_rates(
        model, tokenizer, train.select(alive), stop_at_once_reward, num_samples=4, max_new_tokens=3, seed=1
    )["pass_rate"]
    assert [result.dataset["pass_rate"][i] for i in alive] == rates
    assert [result.dataset["difficulty"][i] for i in alive] == [1.0 - r for r in rates]
    assert all(result.dataset["pass_rate"][i] is None for i in range(10) if reasons[i] is not None)
    assert result.kept["prompt"] == [train["prompt"][i] for i in alive]
    assert "drop_reason" not in result.kept.column_names
    summary = result.summary
    assert summary["num_rows"] == 10 and summary["num_kept"] == len(alive)
    assert summary["dropped"]["multiple_choice"] == 2 and summary["dropped"]["eval_overlap"] == 1
    assert sum(summary["difficulty_histogram_kept"]["counts"]) == len(alive)

    out = result.save(tmp_path / "out")
    assert sorted(os.listdir(out)) == ["README.md", "dataset.jsonl", "difficulty.png", "kept.jsonl", "summary.json"]
    written = read_jsonl(out / "dataset.jsonl")
    assert [r["drop_reason"] for r in written] == reasons and len(read_jsonl(out / "kept.jsonl")) == len(alive)
    assert json.loads((out / "summary.json").read_text())["num_kept"] == len(alive)
    card = (out / "README.md").read_text()
    assert "rl-prompt-curation" in card and "| multiple_choice | 2 |" in card and "answer-only tries" in card


def test_curate_without_a_model_and_bad_input():
    rows = Dataset.from_dict(
        {"prompt": ["What is 3 + 4?", "what is 3 + 4?", "Is 9 prime? (yes/no)"], "answer": ["7"] * 3}
    )
    result = curate(rows, config=CurationConfig(solution_column="answer"))
    assert list(result.dataset["drop_reason"]) == [None, "duplicate", "yes_no"]
    assert list(result.dataset["pass_rate"]) == [None, None, None] and not result.summary["model_steps"]
    with pytest.raises(ValueError, match="no column 'solution'.*--solution_column"):
        curate(rows)
    with pytest.raises(ValueError, match="already has the column"):
        curate(result.dataset, config=CurationConfig(solution_column="answer"))
    with pytest.raises(ValueError, match="need a tokenizer and a reward_func"):
        curate(rows, model=object(), config=CurationConfig(solution_column="answer"))
    with pytest.raises(ValueError, match="Unknown drop_formats"):
        CurationConfig(drop_formats=["essay"])
    # a format left out of drop_formats is kept
    kept = curate(rows, config=CurationConfig(solution_column="answer", drop_formats=["proof"]))
    assert list(kept.dataset["drop_reason"]) == [None, "duplicate", None]


def test_save_without_matplotlib_fails_clearly_and_push_to_hub_sends_the_card(tmp_path, monkeypatch):
    rows = Dataset.from_dict({"prompt": ["What is 3 + 4?"], "answer": ["7"]})
    result = curate(rows, config=CurationConfig(solution_column="answer"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'trl-kimi\[plot\]'"):
        result.save(tmp_path / "a")
    assert not (tmp_path / "a").exists()  # failed before writing anything
    result.save(tmp_path / "b", plot=False)
    assert not (tmp_path / "b" / "difficulty.png").exists() and (tmp_path / "b" / "kept.jsonl").exists()

    pushed = []
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, repo_id, **kw: pushed.append(("data", repo_id, len(self)))
    )
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub.DatasetCard,
        "push_to_hub",
        lambda self, repo_id, **kw: pushed.append(("card", repo_id, self.text)),
    )
    result.push_to_hub("me/curated")
    assert pushed[0] == ("data", "me/curated", 1)
    assert pushed[1][:2] == ("card", "me/curated") and "1 of 1 prompts kept" in pushed[1][2]


# ---------------------------------------------------------------------------------------------------- trl-kimi curate
def test_cli_curates_the_embedded_task_offline(tmp_path, capsys):
    tokenizer = arithmetic.make_tokenizer()
    model = eos_prone_model(tokenizer, p_eos=0.5)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "out"
    argv = [
        "curate",
        "--dataset_name",
        "chain-sum",
        "--max_samples",
        "12",
        "--model_name_or_path",
        str(tmp_path / "model"),
    ]
    argv += ["--num_samples", "2", "--num_guess_tries", "8", "--max_new_tokens", "8", "--output_dir", str(out)]
    assert cli_main([*argv, "--progress", "false"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"] == "chain-sum" and summary["num_rows"] == 12
    # chain-sum: no instruction and a 4-token cap for the answer-only tries (the short answer "=18" and EOS)
    assert summary["config"]["guess_instruction"] == "" and summary["config"]["guess_max_new_tokens"] == 4
    assert summary["config"]["solution_column"] == "answer"
    rows = read_jsonl(out / "dataset.jsonl")
    assert [r["prompt"] for r in rows] == arithmetic.make_rl_dataset(12, seed=0)["prompt"]
    assert all((r["pass_rate"] is None) == (r["drop_reason"] is not None) for r in rows)
    assert "kept.jsonl" in capsys.readouterr().out
    # same flags, same dataset (seeded)
    assert cli_main([*argv[:-1], str(tmp_path / "again"), "--progress", "false"]) == 0
    assert read_jsonl(tmp_path / "again" / "dataset.jsonl") == rows


def test_gsm8k_example_trains_on_the_kept_rows_as_they_are(tmp_path):
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location(
        "kimi_gsm8k", Path(__file__).parents[1] / "examples" / "kimi_gsm8k.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = make_prompt_dataset(Dataset.from_dict({"question": ["How many?"], "answer": ["#### 4"]}), "gsm8k", True)
    kept = curate(rows).kept
    kept.to_json(tmp_path / "kept.jsonl")
    args = SimpleNamespace(dataset_name=None, dataset_config=None, system_prompt=None)
    loaded = example.load_split(args, str(tmp_path / "kept.jsonl"), "train", None)
    assert loaded["prompt"] == rows["prompt"] and loaded["solution"] == rows["solution"]


@needs_data
def test_cli_curates_a_public_dataset_file(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["curate", "--dataset_name", str(DATA / "math500/test.jsonl"), "--output_dir", str(out)]
    argv += ["--eval_dataset_name", str(DATA / "math500/test.jsonl"), "--eval_dataset_split", "train"]
    assert cli_main([*argv, "--eval_dataset_name", str(DATA / "gsm8k/test.jsonl")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_rows"] == 500 and summary["dropped"] == {"multiple_choice": 6}
    assert len(read_jsonl(out / "kept.jsonl")) == 494
    # curating a set against itself drops every row that survives the earlier rules
    assert cli_main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["dropped"] == {"multiple_choice": 6, "eval_overlap": 494}
    assert cli_main(["curate", "--dataset_name", str(DATA / "math500/test.jsonl"), "--push_to_hub", "true"]) == 1
    assert "--push_to_hub needs --hub_dataset_id" in capsys.readouterr().err
