//! Measurement accounting, conditions and argument resolution (pure).
