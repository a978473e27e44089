# Reference values for the crossed random-effects model (src/stats/crossed.rs), computed
# with lme4 and lmerTest (Satterthwaite's degrees of freedom).
#
# Writes tests/data/crossed_reference.json, which tests/stats_reference.rs checks
# `affectbench::stats::crossed::fit` against. Run from the repository root:
#
#     apt-get install r-base-core r-cran-lme4 r-cran-lmertest r-cran-jsonlite
#     Rscript scripts/crossed_reference.R
#
# Each data set is drawn here from a known model and rounded, so the fixture holds the
# exact numbers both implementations fit. A factor that does not apply to a row (a
# baseline conversation has no vignette) is coded as level NA; lme4 gets it as
# (0 + has_f | f), so the row's Z entry is zero, which is what crossed.rs does.
suppressMessages({
  library(lmerTest)
  library(jsonlite)
})
set.seed(20261205)

draw <- function(levels, sd) setNames(rnorm(length(levels), sd = sd), levels)

vignettes <- paste0("v", 1:5)
prompts <- paste0("p", 1:4)

# Induction (vignette x prompt, 2 each) against a baseline with no vignette.
induction_vs_baseline <- function() {
  v <- draw(vignettes, 0.6); s <- draw(prompts, 0.4)
  a <- expand.grid(vignette = vignettes, prompt = prompts, rep = 1:2, stringsAsFactors = FALSE)
  a$in_a <- TRUE
  b <- expand.grid(vignette = NA, prompt = prompts, rep = 1:5, stringsAsFactors = FALSE)
  b$in_a <- FALSE
  d <- rbind(a, b)
  d$block <- ""
  d$y <- round(3 + 1.2 * d$in_a + ifelse(is.na(d$vignette), 0, v[d$vignette]) +
               s[d$prompt] + rnorm(nrow(d), sd = 0.5), 4)
  d
}

# Two arms that both show every vignette (trauma vs trauma + relaxation).
both_arms_crossed <- function() {
  v <- draw(vignettes, 0.7); s <- draw(prompts, 0.3)
  d <- expand.grid(vignette = vignettes, prompt = prompts, rep = 1:2, in_a = c(TRUE, FALSE),
                   stringsAsFactors = FALSE)
  d$block <- ""
  d$y <- round(4 - 0.4 * d$in_a + v[d$vignette] + s[d$prompt] + rnorm(nrow(d), sd = 0.6), 4)
  d
}

# Completions: 4 stems (fixed) x 2 completions in each conversation; conversations nested
# in vignette (arm a) or in nothing (arm b), crossed with prompts.
completions <- function() {
  v <- draw(vignettes, 0.5); s <- draw(prompts, 0.3)
  conv_a <- expand.grid(vignette = vignettes, prompt = prompts, stringsAsFactors = FALSE)
  conv_a$in_a <- TRUE
  conv_b <- expand.grid(vignette = NA, prompt = prompts, rep = 1:3, stringsAsFactors = FALSE)[, 1:2]
  conv_b$in_a <- FALSE
  convs <- rbind(conv_a, conv_b)
  convs$conversation <- paste0("c", seq_len(nrow(convs)))
  c_eff <- setNames(rnorm(nrow(convs), sd = 0.45), convs$conversation)
  stem_eff <- c(s1 = 0, s2 = 0.5, s3 = -0.3, s4 = 0.2)
  d <- merge(convs, expand.grid(block = names(stem_eff), completion = 1:2,
                                stringsAsFactors = FALSE))
  d$y <- round(-0.2 - 0.6 * d$in_a + ifelse(is.na(d$vignette), 0, v[d$vignette]) +
               s[d$prompt] + c_eff[d$conversation] + stem_eff[d$block] +
               rnorm(nrow(d), sd = 0.7), 4)
  d
}

fit_one <- function(name, d, factors) {
  for (f in factors) {
    d[[paste0("has_", f)]] <- as.numeric(!is.na(d[[f]]))
    first <- d[[f]][!is.na(d[[f]])][1]
    d[[paste0("lvl_", f)]] <- ifelse(is.na(d[[f]]), first, d[[f]])
  }
  d$a <- as.numeric(d$in_a)
  fixed <- if (length(unique(d$block)) > 1) "y ~ a + block" else "y ~ a"
  random <- paste0("(0 + has_", factors, " | lvl_", factors, ")", collapse = " + ")
  m <- lmer(as.formula(paste(fixed, "+", random)), data = d, REML = TRUE)
  stopifnot(!isSingular(m))
  co <- summary(m, ddf = "Satterthwaite")$coefficients["a", ]
  vc <- as.data.frame(VarCorr(m))
  variances <- sapply(factors, function(f) vc$vcov[vc$grp == paste0("lvl_", f)])
  rows <- lapply(seq_len(nrow(d)), function(i) list(
    y = d$y[i], in_a = d$in_a[i], block = d$block[i],
    levels = lapply(factors, function(f) if (is.na(d[[f]][i])) NULL else d[[f]][i])))
  list(name = name, factors = factors, rows = rows,
       estimate = unname(co["Estimate"]), se = unname(co["Std. Error"]),
       df = unname(co["df"]), t = unname(co["t value"]), p = unname(co["Pr(>|t|)"]),
       variances = as.list(unname(variances)), residual = sigma(m)^2)
}

ibb <- induction_vs_baseline()
unbalanced <- induction_vs_baseline()
unbalanced <- unbalanced[-sample(nrow(unbalanced), 9), ]
out <- list(
  generator = sprintf("R %s, lme4 %s, lmerTest %s (Satterthwaite)", getRversion(),
                      packageVersion("lme4"), packageVersion("lmerTest")),
  fits = list(
    fit_one("induction-vs-baseline", ibb, c("vignette", "prompt")),
    fit_one("both-arms-crossed", both_arms_crossed(), c("vignette", "prompt")),
    fit_one("completions", completions(), c("conversation", "vignette", "prompt")),
    fit_one("unbalanced", unbalanced, c("vignette", "prompt"))
  )
)
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null", pretty = TRUE),
           "tests/data/crossed_reference.json")
