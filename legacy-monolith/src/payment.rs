//! The payment gateway interface the monolith charges orders through. The legacy system used an
//! in-process simulated gateway; its behaviour is keyed by the card token so tests can choose it.

use crate::config::PaymentProvider;

/// A successful charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The gateway's reference for refunds.
    pub reference: String,
    /// Gateway name stored with the payment.
    pub provider: &'static str,
}

/// Why a charge or refund did not happen.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PaymentError {
    /// The card was declined: the customer must use another one.
    #[error("{0}")]
    Declined(String),
    /// The gateway could not be reached or failed: nothing was charged.
    #[error("{0}")]
    Unavailable(String),
}

/// The gateway chosen by config.
#[derive(Debug, Clone)]
pub struct PaymentGateway {
    provider: PaymentProvider,
}

impl PaymentGateway {
    /// The configured gateway.
    pub fn new(provider: PaymentProvider) -> Self {
        Self { provider }
    }

    /// Charges `amount_cents` for `idempotency_key` with the card `token`.
    pub async fn charge(
        &self,
        idempotency_key: &str,
        amount_cents: i64,
        token: &str,
    ) -> Result<Charge, PaymentError> {
        match self.provider {
            PaymentProvider::Simulated => simulated_charge(idempotency_key, amount_cents, token),
        }
    }

    /// Refunds a previous charge.
    pub async fn refund(&self, charge: &str, amount_cents: i64) -> Result<(), PaymentError> {
        match self.provider {
            PaymentProvider::Simulated => {
                if charge.starts_with("sim_") && amount_cents >= 0 {
                    Ok(())
                } else {
                    Err(PaymentError::Unavailable(format!(
                        "unknown charge {charge}"
                    )))
                }
            }
        }
    }
}

fn simulated_charge(key: &str, amount_cents: i64, token: &str) -> Result<Charge, PaymentError> {
    if token.starts_with("tok_decline") {
        return Err(PaymentError::Declined("the card was declined".into()));
    }
    if token.starts_with("tok_unavailable") {
        return Err(PaymentError::Unavailable(
            "the payment gateway did not answer".into(),
        ));
    }
    if !token.starts_with("tok_") {
        return Err(PaymentError::Declined(
            "the payment token is not recognised".into(),
        ));
    }
    if amount_cents <= 0 {
        return Err(PaymentError::Declined("nothing to charge".into()));
    }
    // Deterministic per idempotency key: charging the same key twice yields the same charge.
    Ok(Charge {
        reference: format!("sim_{key}"),
        provider: "simulated",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn simulated_gateway_follows_the_token() {
        let g = PaymentGateway::new(PaymentProvider::Simulated);
        let c = g.charge("order-1", 1000, "tok_visa").await.unwrap();
        assert_eq!(c.reference, "sim_order-1");
        assert_eq!(g.charge("order-1", 1000, "tok_visa").await.unwrap(), c);
        assert!(matches!(
            g.charge("k", 1000, "tok_declined").await,
            Err(PaymentError::Declined(_))
        ));
        assert!(matches!(
            g.charge("k", 1000, "tok_unavailable").await,
            Err(PaymentError::Unavailable(_))
        ));
        assert!(matches!(
            g.charge("k", 1000, "visa").await,
            Err(PaymentError::Declined(_))
        ));
        g.refund(&c.reference, 1000).await.unwrap();
        assert!(g.refund("other", 1000).await.is_err());
    }
}
