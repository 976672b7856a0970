//! The enclave's refusal reasons (`signer.capnp`'s `RefusalReason`) as labels, the same in the
//! enclave's `signer_enclave_refusals_total{reason}` and in the scanner's logs and
//! `processor_plans_refused_total{reason}`.

use crate::generated::signer_capnp::RefusalReason;

/// The label of a reason in logs and in `signer_enclave_refusals_total{reason}`.
pub fn label(reason: RefusalReason) -> &'static str {
    match reason {
        RefusalReason::Malformed => "malformed",
        RefusalReason::UnknownKey => "unknown_key",
        RefusalReason::UnknownAttempt => "unknown_attempt",
        RefusalReason::AttestationInvalid => "attestation_invalid",
        RefusalReason::PlanNotAcknowledged => "plan_not_acknowledged",
        RefusalReason::FeeRateTooHigh => "fee_rate_too_high",
        RefusalReason::FeeShareTooHigh => "fee_share_too_high",
        RefusalReason::InputAlreadySigned => "input_already_signed",
        RefusalReason::AttemptAlreadyPreprocessed => "attempt_already_preprocessed",
        RefusalReason::BatchIdReused => "batch_id_reused",
        RefusalReason::CustodyUnavailable => "custody_unavailable",
        RefusalReason::PlanIdMismatch => "plan_id_mismatch",
        RefusalReason::Unbuildable => "unbuildable",
        RefusalReason::BatchMismatch => "batch_mismatch",
        RefusalReason::HistoryUnavailable => "history_unavailable",
        RefusalReason::ConflictingRepeat => "conflicting_repeat",
        RefusalReason::SetShapeRefused => "set_shape_refused",
        RefusalReason::TooManySessions => "too_many_sessions",
        RefusalReason::StaleAttempt => "stale_attempt",
        RefusalReason::BatchOutOfOrder => "batch_out_of_order",
        RefusalReason::WrongNetwork => "wrong_network",
        RefusalReason::BatchAhead => "batch_ahead",
        RefusalReason::ReplacementMismatch => "replacement_mismatch",
        RefusalReason::ReplacementUnderbids => "replacement_underbids",
        RefusalReason::ReplacementDropsPayment => "replacement_drops_payment",
        RefusalReason::ReshareFailed => "reshare_failed",
        RefusalReason::NotInSet => "not_in_set",
    }
}
