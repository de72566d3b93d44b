module github.com/sugarme/gotch

go 1.20

require (
	github.com/golang/freetype v0.0.0-20170609003504-e2365dfdc4a0
	golang.org/x/image v0.5.0
)
