"""lm-evaluation-harness's GSM8K protocols, rebuilt: prompts, few-shot choice, stop sequences and scoring.

``gsm8k`` (5-shot, random train examples), ``gsm8k_cot`` (the 8 fixed chain-of-thought exemplars) and
``gsm8k_cot_zeroshot`` as lm-eval 0.4's task configs define them (``lm_eval/tasks/gsm8k/*.yaml``): the same
prompt text, few-shot examples in the same order (lm-eval's sampler: one ``random.Random(1234)`` drawing
``sample(train, 5)`` for each test problem in turn), the same stop sequences and 256-token cap, and the
same ``strict-match`` / ``flexible-extract`` filters and ``exact_match`` normalisation.
``tests/pipeline/evaluation/test_protocols_lm_eval.py`` holds them equal to lm-eval itself, problem by problem.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

FALLBACK = "[invalid]"  # what lm-eval's regex filter returns when nothing matches
FLEXIBLE_PATTERN = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
FLEXIBLE_GROUP = -1  # flexible-extract's group_select: the last number
IGNORED = (",", r"\$", "(?s).*#### ", r"\.$")  # exact_match's regexes_to_ignore, applied in order
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed

# gsm8k_cot's exemplars (Wei et al., 2022), as lm-eval's gsm8k-cot.yaml gives them: (question, target)
COT_EXEMPLARS = (
    ("There are 15 trees in the grove. Grove workers will plant trees in the grove today. After they are done, "
     "there will be 21 trees. How many trees did the grove workers plant today?",
     "There are 15 trees originally. Then there were 21 trees after some more were planted. So there must have "
     "been 21 - 15 = 6. The answer is 6."),
    ("If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in the parking lot?",
     "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The answer is 5."),
    ("Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they have left in total?",
     "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had 32 + 42 = 74. After eating 35, "
     "they had 74 - 35 = 39. The answer is 39."),
    ("Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. How many lollipops did "
     "Jason give to Denny?",
     "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he gave Denny 20 - 12 = 8. "
     "The answer is 8."),
    ("Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How many toys does he have "
     "now?",
     "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is 4 more toys. 5 + 4 = 9. "
     "The answer is 9."),
    ("There were nine computers in the server room. Five more computers were installed each day, from monday to "
     "thursday. How many computers are now in the server room?",
     "There were originally 9 computers. For each of 4 days, 5 more computers were added. So 5 * 4 = 20 "
     "computers were added. 9 + 20 is 29. The answer is 29."),
    ("Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost 2 more. How many golf "
     "balls did he have at the end of wednesday?",
     "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. After losing 2 more, "
     "he had 35 - 2 = 33 golf balls. The answer is 33."),
    ("Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
     "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she has 23 - 15 dollars "
     "left. 23 - 15 is 8. The answer is 8."),
)


@dataclass(frozen=True)
class Protocol:
    """One lm-eval GSM8K task: how a problem becomes a prompt, where generation stops, how it is scored."""

    name: str
    question_format: str  # doc_to_text, with {question}
    num_fewshot: int
    fixed_exemplars: tuple[tuple[str, str], ...] = ()  # first_n sampler; empty: random train examples
    until: tuple[str, ...] = ("Question:", "</s>", "<|im_end|>")
    strict_pattern: str = r"#### (\-?[0-9\.\,]+)"
    max_gen_toks: int = 256
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    reference_form: str = "solution"  # doc_to_target: the whole solution, or (gsm8k_cot) the number after ####

    def reference(self, solution: str) -> str:
        """The gold string exact_match compares with: ``{{answer}}`` (gsm8k) or the number after ``####``.

        >>> PROTOCOLS["gsm8k"].reference("5 + 2 = 7\\n#### 7"), PROTOCOLS["gsm8k_cot"].reference("5 + 2 = 7\\n#### 7")
        ('5 + 2 = 7\\n#### 7', '7')
        """
        return solution if self.reference_form == "solution" else solution.split("####")[-1].strip()


PROTOCOLS = {
    "gsm8k": Protocol("gsm8k", "Question: {question}\nAnswer:", 5),
    "gsm8k_cot": Protocol("gsm8k_cot", "Q: {question}\nA:", 8, COT_EXEMPLARS, ("Q:", "</s>", "<|im_end|>"),
                          r"The answer is (\-?[0-9\.\,]+).", reference_form="final number"),
    "gsm8k_cot_zeroshot": Protocol("gsm8k_cot_zeroshot", "Q: {question}\nA: Let's think step by step.", 0,
                                   until=("Q:", "</s>", "<|im_end|>"),
                                   strict_pattern=r"The answer is (\-?[0-9\.\,]+)."),
}


def fewshot_examples(protocol: Protocol, train: Sequence[tuple[str, str]], num_problems: int,
                     seed: int = FEWSHOT_SEED) -> Iterator[list[tuple[str, str]]]:
    """The (question, target) shots of each of the first ``num_problems`` test problems, in order.

    Random shots reproduce lm-eval's ``ContextSampler``: one ``random.Random(seed)`` draws
    ``sample(train, k)`` per problem in turn, so problem i's shots depend on i, not on how many are run.

    >>> shots = list(fewshot_examples(PROTOCOLS["gsm8k"], [(f"q{i}", f"a{i}") for i in range(100)], 2))
    >>> [len(s) for s in shots], shots[0] != shots[1]
    ([5, 5], True)
    """
    rng, pool = random.Random(seed), list(train)  # one copy: sample() draws by index, as from lm-eval's list
    for _ in range(num_problems):
        if protocol.fixed_exemplars or protocol.num_fewshot == 0:
            yield list(protocol.fixed_exemplars[: protocol.num_fewshot])
        else:
            yield [(q, protocol.reference(a)) for q, a in rng.sample(pool, protocol.num_fewshot)]


def build_messages(protocol: Protocol, question: str, shots: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """The prompt as lm-eval's messages: a user turn per question, an assistant turn per shot's target. Each
    message carries the ``delimiter`` that follows it in plain text (lm-eval's ``Message._delimiter``)."""
    messages = []
    for shot_question, target in shots:
        messages.append({"role": "user", "content": protocol.question_format.format(question=shot_question),
                         "delimiter": protocol.target_delimiter})
        messages.append({"role": "assistant", "content": target, "delimiter": protocol.fewshot_delimiter})
    messages.append({"role": "user", "content": protocol.question_format.format(question=question), "delimiter": ""})
    return messages


def render(messages: list[dict[str, str]], tokenizer=None, *, apply_chat_template: bool = False,
           fewshot_as_multiturn: bool = False) -> str:
    """The prompt text: plain (each message and its delimiter), or through the tokenizer's chat template with
    the shots as turns (``fewshot_as_multiturn``) or folded into one user message, as lm-eval does.

    >>> render([{"role": "user", "content": "Q: 1+1?\\nA:", "delimiter": " "},
    ...         {"role": "assistant", "content": "2", "delimiter": "\\n\\n"},
    ...         {"role": "user", "content": "Q: 2+2?\\nA:", "delimiter": ""}])
    'Q: 1+1?\\nA: 2\\n\\nQ: 2+2?\\nA:'
    """
    if not apply_chat_template:
        return "".join(m["content"] + m["delimiter"] for m in messages)
    if fewshot_as_multiturn:
        chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    else:
        chat = [{"role": "user", "content": "".join(m["content"] + m["delimiter"] for m in messages)}]
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """The completion up to the first stop sequence, each applied in turn (lm-eval's post-processing).

    >>> cut_at_stop("7. The answer is 7.\\n\\nQuestion: next", ("Question:", "</s>"))
    '7. The answer is 7.\\n\\n'
    """
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def regex_filter(text: str, pattern: str, group_select: int = 0) -> str:
    """lm-eval's ``regex`` filter then ``take_first``: the match at ``group_select`` (its first non-empty group
    when the pattern has several), stripped; ``[invalid]`` when nothing matches.

    >>> regex_filter("so 3 + 4 = 7 #### 7", r"#### (\\-?[0-9\\.\\,]+)"), regex_filter("no number", FLEXIBLE_PATTERN)
    ('7', '[invalid]')
    >>> regex_filter("I have $1,200 and 3 more", FLEXIBLE_PATTERN, group_select=-1)
    '3'
    """
    matches = re.findall(pattern, text)
    if not matches:
        return FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), FALLBACK)
    return match.strip()


def exact_match(prediction: str, reference: str) -> bool:
    """lm-eval's ``exact_match`` with GSM8K's settings: the ignored regexes removed from both, case ignored.

    >>> exact_match("$1,200.", "Total: 12 * 100 = 1200\\n#### 1200"), exact_match("[invalid]", "#### 3")
    (True, False)
    """
    for pattern in IGNORED:
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    return prediction.lower() == reference.lower()


def score(protocol: Protocol, completion: str, solution: str) -> dict[str, object]:
    """The strict-match and flexible-extract readings of a (stop-cut) completion (None where lm-eval's filter
    gives ``[invalid]``), and whether each matches the solution under ``exact_match``."""
    strict = regex_filter(completion, protocol.strict_pattern)
    flexible = regex_filter(completion, FLEXIBLE_PATTERN, group_select=FLEXIBLE_GROUP)
    gold = protocol.reference(solution)
    return {"extracted": None if strict == FALLBACK else strict, "correct": exact_match(strict, gold),
            "extracted_flexible": None if flexible == FALLBACK else flexible,
            "correct_flexible": exact_match(flexible, gold)}


GREEDY_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
                     "min_new_tokens": None, "min_length": 0, "suppress_tokens": None, "begin_suppress_tokens": None,
                     "bad_words_ids": None, "forced_bos_token_id": None, "forced_eos_token_id": None}


def warn_about_generation_config(model) -> None:
    """lm-eval decodes with ``model.generate``, which applies the logits processors a model's generation
    config sets even when greedy; this evaluation takes the plain argmax. Say so when a model sets one."""
    import logging

    config = getattr(model, "generation_config", None)
    set_here = {k: getattr(config, k, None) for k, v in GREEDY_PROCESSORS.items()
                if getattr(config, k, None) not in (v, None, [])}  # None: unset (transformers 5's default)
    if set_here:
        logging.getLogger(__name__).warning(
            "the model's generation_config sets %s: lm-eval's greedy decoding applies it and --protocol's does "
            "not, so numbers can differ from lm-eval's (run `make eval-lm-eval` for lm-eval's own)", set_here)


def protocol_prompts(protocol: Protocol, problems: Sequence[dict], train: Sequence[dict], tokenizer=None, *,
                     apply_chat_template: bool = False, fewshot_as_multiturn: bool = False) -> list[str]:
    """The prompt text of each problem (rows with ``question`` and ``answer``), in order, as lm-eval builds it."""
    shots = fewshot_examples(protocol, [(row["question"], row["answer"]) for row in train], len(problems))
    return [render(build_messages(protocol, row["question"], problem_shots), tokenizer,
                   apply_chat_template=apply_chat_template, fewshot_as_multiturn=fewshot_as_multiturn)
            for row, problem_shots in zip(problems, shots)]


def adds_special_tokens(tokenizer, prompts: Sequence[str]) -> bool:
    """lm-eval encodes with the tokenizer's special tokens (a BOS, for Llama-style ones) unless the text
    already starts with the BOS token (a chat template's); SmolLM2's tokenizer adds none either way."""
    bos = tokenizer.bos_token
    return not (bool(bos) and bool(prompts) and prompts[0].startswith(bos))


def evaluate_protocol(model, tokenizer, problems: Sequence[tuple[str, dict]], train: Sequence[dict],
                      protocol: Protocol, *, batch_size: int, apply_chat_template: bool = False,
                      fewshot_as_multiturn: bool = False, show_progress: bool = True,
                      finished_everywhere=None, generator=None) -> list[dict[str, object]]:
    """Greedy completions of ``problems`` ((source, row) pairs) under ``protocol``, cut at its stop sequences
    and scored; one record per problem: ``prompt`` (the exact text given), ``completion``, the readings and
    ``correct`` (strict-match) / ``correct_flexible`` (flexible-extract). ``generator``: decodes in place of the
    built-in decoder on ``model`` (e.g. ``pipeline.vllm_generation.VLLMGenerator``; ``model`` unused then)."""
    from functools import partial

    from tqdm.auto import tqdm

    from pipeline.generation import generate

    prompts = protocol_prompts(protocol, [row for _, row in problems], train, tokenizer,
                               apply_chat_template=apply_chat_template, fewshot_as_multiturn=fewshot_as_multiturn)
    # lm-eval adds the EOS token's text to the stop sequences; generation also ends at the EOS token itself
    eos_text = tokenizer.decode(tokenizer.eos_token_id, skip_special_tokens=False)
    until = [*protocol.until, *([eos_text] if eos_text not in protocol.until else [])]
    add_special_tokens = adds_special_tokens(tokenizer, prompts)
    if generator is None:
        warn_about_generation_config(model)
        generator = partial(generate, model, tokenizer)
    records: list[dict[str, object]] = []
    progress = tqdm(total=len(problems), desc=f"evaluation ({protocol.name})", unit="problem",
                    disable=not show_progress)
    for start in range(0, len(problems), batch_size):
        batch = list(zip(problems[start : start + batch_size], prompts[start : start + batch_size]))
        shown = progress.n
        out = generator([prompt for _, prompt in batch], max_new_tokens=protocol.max_gen_toks,
                       do_sample=False, stop_strings=until, add_special_tokens=add_special_tokens,
                       finished_everywhere=finished_everywhere,
                       rows_done=lambda done, begun=shown: progress.update(begun + done - progress.n))
        for i, ((source, row), prompt) in enumerate(batch):
            completion = cut_at_stop(out.texts[i][0], until)
            records.append({"index": len(records), "source": source, "question": row["question"], "prompt": prompt,
                            "gold": protocol.reference(row["answer"]), "completion": completion,
                            "generated": out.texts[i][0],  # the decoded text before the cut at a stop sequence
                            "num_tokens": out.num_tokens[i][0], **score(protocol, completion, row["answer"])})
        progress.update(shown + len(batch) - progress.n)
    progress.close()
    return records


def load_protocol_rows(dataset_name: str, dataset_config: str | None, eval_split: str, train_split: str,
                       limit: int | None, protocol: Protocol | None = None) -> tuple[list[tuple[str, dict]], list[dict]]:
    """(the first ``limit`` evaluation problems as (source, row), the training rows random shots come from), each
    row a GSM8K-shaped ``question`` / ``answer`` pair; bad data stops here in one line, before any model loads.
    The training rows are read only for a protocol that draws random shots (``protocol`` None: always)."""
    from pathlib import Path

    from pipeline.data import DataError
    from pipeline.data.sources import read_rows

    needs_train = protocol is None or (protocol.num_fewshot > 0 and not protocol.fixed_exemplars)
    if needs_train and (train_split == eval_split or Path(dataset_name).is_file()):
        raise DataError(f"--dataset_name {dataset_name}: random shots would be drawn from the problems evaluated "
                        f"(one file, or --train_split = --eval_split = {eval_split}); give a folder or dataset with "
                        f"separate '{train_split}' and '{eval_split}' splits")
    splits = []
    for split in (eval_split, train_split) if needs_train else (eval_split,):
        rows = read_rows(dataset_name, split, dataset_config)
        if not rows:
            raise DataError(f"--dataset_name {dataset_name}: no '{split}' split; lm-eval's GSM8K protocols take "
                            f"their problems from --eval_split ({eval_split}) and random shots from --train_split "
                            f"({train_split})")
        for source, row in rows[: limit if split == eval_split else None]:
            if not (isinstance(row, dict) and isinstance(row.get("question"), str)
                    and isinstance(row.get("answer"), str) and "####" in row["answer"]):
                shape = f"columns {sorted(row)}" if isinstance(row, dict) else f"{type(row).__name__} {row!s:.80}"
                raise DataError(f"{source}: an lm-eval GSM8K protocol needs a 'question' and an 'answer' ending "
                                f"in '#### N' (GSM8K's columns); this row has {shape}")
        splits.append(rows)
    problems, train = splits[0], [row for _, row in splits[1]] if needs_train else []
    if protocol is not None and needs_train and len(train) < protocol.num_fewshot:
        raise DataError(f"--dataset_name {dataset_name}: '{train_split}' has {len(train)} rows; {protocol.name} "
                        f"draws {protocol.num_fewshot} shots for each problem")
    return problems[:limit] if limit else problems, train


def protocol_summary(records: Sequence[dict], protocol: Protocol, seconds: float, **fields: object) -> dict:
    """The evaluation's summary, in the shape of ``evaluate_gsm8k``'s (greedy pass@1, strict and flexible)."""
    from pipeline.evaluation.evaluate import greedy_outcomes

    n = max(len(records), 1)
    tokens = sum(int(r["num_tokens"]) for r in records)
    return {
        **fields,
        "num_problems": len(records),
        "metrics": {"pass@1 (greedy)": {"strict": sum(bool(r["correct"]) for r in records) / n,
                                        "flexible": sum(bool(r["correct_flexible"]) for r in records) / n}},
        "marked_answer_rate": sum(r["extracted"] is not None for r in records) / n,
        "per_problem": greedy_outcomes(records),
        "generated_tokens": tokens,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
        "protocol": {"name": protocol.name, "num_fewshot": protocol.num_fewshot,
                     "until": list(protocol.until) + ["(the tokenizer's EOS text)"], "max_gen_toks": protocol.max_gen_toks},
        "prompt_template": f"lm-eval:{protocol.name}",
    }


@dataclass
class ProtocolProblems:
    """What an evaluation under a protocol needs, read before any model loads: the protocol, its first
    problems as (source, row), and the training rows its shots come from."""

    protocol: Protocol
    problems: list[tuple[str, dict]]
    train: list[dict]
    label: str

    @classmethod
    def load(cls, name: str, dataset_name: str, dataset_config: str | None, eval_split: str, train_split: str,
             limit: int | None) -> ProtocolProblems:
        problems, train = load_protocol_rows(dataset_name, dataset_config, eval_split, train_split, limit,
                                             PROTOCOLS[name])
        return cls(PROTOCOLS[name], problems, train, f"the '{eval_split}' split of {dataset_name}")

    def __len__(self) -> int:
        return len(self.problems)

    def evaluate(self, model, tokenizer, *, batch_size: int, model_name: str, show_progress: bool = True,
                 finished_everywhere=None) -> tuple[list[dict], dict]:
        """(records, summary) of ``model`` on these problems."""
        import time

        started = time.perf_counter()
        records = evaluate_protocol(model, tokenizer, self.problems, self.train, self.protocol, batch_size=batch_size,
                                    show_progress=show_progress, finished_everywhere=finished_everywhere)
        return records, protocol_summary(records, self.protocol, time.perf_counter() - started, model=model_name,
                                         split=f"{self.protocol.name} (lm-eval), {self.label}")
