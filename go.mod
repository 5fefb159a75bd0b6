module github.com/sertun/sertun

go 1.24
