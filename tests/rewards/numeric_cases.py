"""Numeric (completion, gold) cases of the accuracy reward, shared with the math-verify comparison."""

CORRECT = [
    ("<reasoning>\n48/2 = 24\n</reasoning>\n<answer>\n72\n</answer>", "72"),
    ("<answer>72</answer>", "#### 72"),
    ("<answer>$1,234</answer>", "1234"),
    ("<answer>1,234.00</answer>", "1234"),
    ("<answer>18.00</answer>", "18"),
    ("<answer>18 dollars</answer>", "18"),
    ("<answer>18.</answer>", "18"),
    ("<answer>.5</answer>", "0.5"),
    ("<answer>3/4</answer>", "0.75"),
    ("<answer>-7</answer>", "-7"),
    ("<answer>\n5 + 3 = 8\n</answer>", "8"),
    ("so the total is \\boxed{42}", "42"),
    ("\\boxed{\\frac{3}{4}}", "0.75"),
    ("#### 1,000", "1000"),
    ("The answer is 9.", "9"),
    ("The final answer is $18.", "18"),
    ("Final answer is: 250 apples", "250"),
    ("3 cats, then 4. The answer is 7 <answer>7</answer>", "7"),
    ("<answer>1.5e3</answer>", "1500"),
    ("<answer>20%</answer>", "20"),
    ("<answer>2 hours</answer>", "2"),
    ([{"role": "assistant", "content": "<answer>12</answer>"}], "12"),
    ("<answer>12", "12"),  # truncated before the closing tag: still the marked answer
]

WRONG = [
    ("<answer>71</answer>", "72"),
    ("72", "72"),  # unmarked: accuracy needs a marked answer (flexible eval is separate)
    ("The answer is 7. <answer>8</answer>", "7"),  # the last marked answer counts
    ("<answer>7</answer> but the answer is 8", "7"),
    ("<answer>0.3333</answer>", "1/3"),
    ("<answer>-18</answer>", "18"),
    ("<answer>18</answer>", "-18"),
    ("<answer>1,2,3</answer>", "123"),
]
