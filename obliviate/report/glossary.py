"""What every leaderboard key means: name, formula in words, direction, ideal value."""
from __future__ import annotations

# (name, formula in words, direction, ideal)
GLOSSARY: list[tuple[str, str, str, str]] = [
    ("method", "name of the unlearning method; `ceiling` = a second population of models retrained from scratch "
               "on the retain set, `with-forget-set` = models trained as the original was (forget set included), no "
               "unlearning", "-", "-"),
    ("role", "`method` (a contestant), `ceiling` or `floor` (the with-forget-set row)", "-", "-"),
    ("forgetting_quality", "F: per forget example, the best threshold attack telling the method's models from "
                           "retrained models (by their logit-scaled confidence on that example) gives an epsilon; "
                           "epsilon in [0.5k, 0.5(k+1)) earns 0.5^k points, epsilon >= ceil(ln(N-1)) earns 0; "
                           "F = mean points over the forget examples", "higher is better",
     "1 in theory; the ceiling row (about 0.17-0.19 at 512 models) in practice"),
    ("score", "the challenge's final score: F x (mean retain acc / retrained mean retain acc) x "
              "(mean test acc / retrained mean test acc)", "higher is better", "the ceiling row's score or more"),
    ("retain_acc", "accuracy on the retain set (train minus forget), mean over the N models (fraction)",
     "higher is better", ">= the ceiling's"),
    ("test_acc", "accuracy on the held-out test set, mean over the N models (fraction)", "higher is better",
     ">= the ceiling's"),
    ("forget_acc", "accuracy on the forget set, mean over the N models (fraction)",
     "closer to the ceiling's is better", "the ceiling's (retrained) forget accuracy"),
    ("cost", "mean unlearning time of one model / mean time of one retraining (unitless ratio)",
     "lower is better", "<= the run's budget (the challenge: about 0.2)"),
    ("n_models", "population size N: unlearning runs (or trained models) behind the row", "-", "-"),
    ("seconds", "total wall-clock seconds spent producing the row's N models", "lower is better", "-"),
    ("over_budget", "true when cost > budget (the challenge's efficiency rule: unlearning must take at most about "
                    "20% of retraining)", "false is better", "false"),
    ("hparams", "the method's hyper-parameters used for the run", "-", "-"),
    ("population", "path (inside the run directory) of the row's stored arrays: conf, losses, accuracies, seconds",
     "-", "-"),
    ("mia", "starting-kit simple MIA: logistic regression on per-example losses, forget vs test (balanced), "
            "10 stratified shuffle splits with test_size 0.1; mean attack accuracy, averaged over the N models",
     "closer to 0.5 is better", "0.5 (chance)"),
    ("mia_std", "standard deviation of the per-model MIA accuracy over the N models", "lower is better",
     "small (about the ceiling's)"),
    ("ks", "per forget example the two-sample Kolmogorov-Smirnov statistic between the method's and the "
           "retrained models' confidences (max distance between the two empirical CDFs); mean over examples",
     "lower is better", "0 (the ceiling's value is the sampling-noise floor)"),
    ("kl", "per forget example KL(retrained || method) in nats from histograms (20 equal bins over the pooled "
           "range, +1 count per bin); mean over examples", "lower is better",
     "0 (the ceiling's value is the sampling-noise floor)"),
    ("forget_gap", "mean forget acc of the method's models minus mean forget acc of the retrained models",
     "closer to 0 is better", "0"),
    ("retain_acc_std", "standard deviation of retain accuracy over the N models", "lower is better",
     "about the ceiling's"),
    ("test_acc_std", "standard deviation of test accuracy over the N models", "lower is better", "about the ceiling's"),
    ("forget_acc_std", "standard deviation of forget accuracy over the N models", "lower is better",
     "about the ceiling's"),
    ("forgetting_quality_ci", "interval of F at the run's confidence (95% by default): redraws of both populations' "
                              "models by half-sampling (N/2 of each, without replacement; the reference shared by "
                              "every row in a draw), deviations re-centred on the row's F; docs/intervals.md",
     "narrower is more certain", "-"),
    ("score_ci", "interval of the score, from the same draws as forgetting_quality_ci (accuracies resampled with the "
                 "same models)", "narrower is more certain", "-"),
    ("rank", "the method's place among the methods by score (the ceiling and floor rows are not ranked)", "lower is "
             "better", "1"),
    ("rank_ci", "interval of the method's rank among the methods over the paired draws", "narrower is more certain",
     "-"),
    ("p_beats_baseline", "share of paired draws in which the method's score beats `finetune`'s (ties count half)",
     "higher is better", "near 1: a real improvement; near 0.5: no evidence of a difference"),
    ("beats_next", "the method ranked just below this one", "-", "-"),
    ("p_beats_next", "share of paired draws in which the method's score beats the method ranked just below it",
     "higher is better", "near 1: the order is real; near 0.5: the two are indistinguishable at this N"),
    ("spread_ratio", "per forget example std(method's confidences) / std(retrained confidences) over the models, "
                     "median over the forget examples; does not fall with N", "nearer 1 is better",
     "1 (the challenge's finetune: about 1)"),
    ("location_gap", "per forget example (median method - median retrained) / std(retrained), median over the "
                     "forget examples", "nearer 0 is better", "0 (the challenge's finetune: within 0.5)"),
    ("projected_n", "the population size F is projected to (512, the challenge's)", "-", "-"),
    ("projected_forgetting_quality", "F the row would score with projected_n models per population: normal model "
                                     "of each example fitted to the run's models, shrunk by empirical Bayes "
                                     "(docs/projection.md)", "higher is better", "the ceiling's projection"),
    ("projected_forgetting_quality_ci", "predictive interval of projected_forgetting_quality", "narrower is "
                                        "better", "-"),
    ("caution", "set when the row comes from fewer than 64 models: F falls as N grows, compare only at equal N",
     "-", "absent"),
    ("projected", "true for a ceiling projected from the reference alone (a kit holding fewer than 2N models)",
     "-", "-"),
    ("place", "the team's place in the challenge (the organisers' order)", "-", "-"),
    ("small_model_note", "what a layer-choosing winner becomes on this preset's model", "-", "-"),
    ("epsilon (plots)", "per forget example: max over threshold attacks of max(log(1-1e-5-FPR) - log(FNR), "
                        "log(1-1e-5-FNR) - log(FPR)), clipped to [0, 50]; 50 for a too-peaky population",
     "lower is better", "0"),
]


def metric_glossary(markdown: bool = False):
    """The glossary as a list of dicts {name, formula, direction, ideal}, or as a Markdown table."""
    rows = [dict(name=n, formula=f, direction=d, ideal=i) for n, f, d, i in GLOSSARY]
    if not markdown:
        return rows
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| metric | formula | direction | ideal |", "|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {esc(r['formula'])} | {esc(r['direction'])} | {esc(r['ideal'])} |" for r in rows]
    return "\n".join(lines) + "\n"
