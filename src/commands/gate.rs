//! Confirmations on the terminal: `--yes` answers yes; without a terminal nothing risky goes
//! ahead.

use std::io::IsTerminal;

use async_trait::async_trait;

use crate::operation::Approver;

#[derive(Debug, Clone)]
pub struct CliGate {
    pub assume_yes: bool,
}

impl CliGate {
    pub fn interactive() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn ask(&self, question: &str) -> bool {
        if self.assume_yes {
            return true;
        }
        if !Self::interactive() {
            return false;
        }
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
            .unwrap_or(false)
    }

    fn ask_typed(&self, prompt: &str, expected: &str) -> bool {
        if self.assume_yes {
            return true;
        }
        let typed = dialoguer::Input::<String>::new()
            .with_prompt(prompt)
            .allow_empty(true)
            .interact_text()
            .unwrap_or_default();
        typed.trim() == expected
    }
}

/// Questions are asked on a blocking thread, so that the lease's renewal, which runs on the
/// same task as the operation, does not stall while a person thinks.
#[async_trait(?Send)]
impl Approver for CliGate {
    async fn confirm(&self, question: &str) -> bool {
        let gate = self.clone();
        let question = question.to_owned();
        tokio::task::spawn_blocking(move || gate.ask(&question))
            .await
            .unwrap_or(false)
    }

    async fn confirm_typed(&self, prompt: &str, expected: &str) -> bool {
        let gate = self.clone();
        let (prompt, expected) = (prompt.to_owned(), expected.to_owned());
        tokio::task::spawn_blocking(move || gate.ask_typed(&prompt, &expected))
            .await
            .unwrap_or(false)
    }

    fn confirm_now(&self, question: &str) -> bool {
        self.ask(question)
    }
}
