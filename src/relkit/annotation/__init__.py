"""Human annotation in the workspace: the pairs people are asked to judge (`queue`), the app
they judge them in (`app`), where their judgments are kept (`store`), and how far annotators
agree (`agreement`)."""
