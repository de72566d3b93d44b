// Package docs holds diad's user documentation (the Markdown files beside
// this one). Its tests keep the documents and the repository honest: no
// tracked text speaks of how the project was built, and the import rules
// ARCHITECTURE.md states hold.
package docs
