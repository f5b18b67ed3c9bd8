//! The rollout planner: a pure function of (observation, now).
