//! AnalysisTemplate, ClusterAnalysisTemplate and AnalysisRun types.
