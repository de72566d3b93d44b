// Package datasets loads anomaly-detection datasets (MVTec-AD, VisA, MVTec-3D
// RGB, generic folders) into normalised batches, and generates the synthetic
// MVTec-layout dataset that tests and `make run` use.
package datasets
